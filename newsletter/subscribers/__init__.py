"""Subscribers and their topic preferences: the rules of the list, one job a module.

- `fields`: the values a subscriber has, checked (address, name, topic choice, status)
- `rules`: the one owner of status changes (who may turn which status into which)
- `csv_format`: the subscribers CSV file, read and validated row by row, and written
- `csv_import`: importing a CSV (validate everything, then apply in one transaction)
- `admin`: the admin's operations (find, add, set topics, unsubscribe, resubscribe, history, list)
- `stats`: counts per status and per topic; `reach`: who would get an issue

The SQL is `newsletter.store.subscribers` (rows in, rows out, no rules). The names below are the
package's public API: the CLI and the web call these.
"""

from .admin import (
    add,
    count_subscribers,
    find,
    get,
    history,
    iter_subscribed,
    list_subscribers,
    resubscribe,
    set_topics,
    unsubscribe,
)
from .csv_format import (
    CSV_COLUMNS,
    HEADER,
    CsvRow,
    csv_row,
    escape_cell,
    export_csv,
    export_csv_file,
    read_csv,
    unescape_cell,
    write_csv,
)
from .csv_import import ImportResult, ProgressHook, import_csv
from .fields import (
    MAX_NAME,
    STATUSES,
    SUBSCRIBED,
    check_address,
    check_name,
    normalise_address,
    parse_status,
    parse_topics,
)
from .reach import IssueReach, issue_reach
from .stats import SubscriberStats, TopicCount, stats

__all__ = [
    "csv_row",
    "escape_cell",
    "unescape_cell",
    "CSV_COLUMNS",
    "HEADER",
    "MAX_NAME",
    "STATUSES",
    "SUBSCRIBED",
    "CsvRow",
    "ImportResult",
    "IssueReach",
    "ProgressHook",
    "SubscriberStats",
    "TopicCount",
    "add",
    "check_address",
    "check_name",
    "count_subscribers",
    "export_csv",
    "export_csv_file",
    "find",
    "get",
    "history",
    "import_csv",
    "issue_reach",
    "iter_subscribed",
    "list_subscribers",
    "normalise_address",
    "parse_status",
    "parse_topics",
    "read_csv",
    "resubscribe",
    "set_topics",
    "stats",
    "unsubscribe",
    "write_csv",
]
