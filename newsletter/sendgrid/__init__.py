"""Everything that talks to SendGrid's API, apart from the mail-send payload.

- `client`: the official client set up once (key, host, timeout) and its failures as our exceptions
- `custom_args`: the names that tie a message to our records, written by the backend, read back
  by the webhook
- `suppressions`: SendGrid's suppression lists pulled into the subscribers' status
- `webhooks`: SendGrid's signed event webhook, verified and applied once

The mail send itself is the delivery backend (`newsletter.delivery.backends.sendgrid`), which
builds the payloads and uses `client`. Nothing here imports the `sendgrid` library until it is
used.
"""
