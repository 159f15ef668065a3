"""The custom args that tie a SendGrid message to our records.

The backend puts them on every personalization; SendGrid copies them into each event it posts to
the webhook, which finds the issue's ledger row through them.
"""

ISSUE = "newsletter_issue"
SUBSCRIBER = "newsletter_subscriber"  # the subscriber's id, as text
PROOF = "newsletter_proof"  # "true" on a proof, which has no subscriber
