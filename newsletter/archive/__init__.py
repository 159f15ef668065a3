"""The public archive: a static site of the sent issues, a page per topic, a feed and a search.

`urls` decides every page's address (the email's "View in your browser" link uses it too);
`collect` reads what was sent; `pages`, `feeds` and `search` render; `build` writes.
This module imports nothing itself, so that `render` can use `urls` without a cycle.
"""
