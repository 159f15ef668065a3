"""What readers did with an issue: which link a click was (`links`), the click report
(`report`) and its HTML page (`page`). The counting itself is `newsletter.sendgrid.clicks`."""
