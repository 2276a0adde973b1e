"""Reads sample log lines with parsers that are not shardline's, for the
cross-check in tests/parse.rs.

    crosscheck.py FORMAT FILE [COLUMNS]

prints one JSON object per record of FILE: {"line": N, ...} with the first
line's number and the independent parser's result under shardline's key names,
or {"line": N, "error": "..."} when it refuses the record. COLUMNS (csv only)
names the columns, comma-separated; a record with another number of fields is
refused, as shardline's csv preset refuses it.

FORMAT and the parser that reads it:
- apache_common, apache_combined: apache-log-parser;
- syslog_rfc5424: syslog-rfc5424-parser;
- syslog_rfc3164: syslogmp (it needs a PRI);
- logfmt: logfmt;
- csv: Python's csv module, default dialect;
- COMMONAPACHELOG, COMBINEDAPACHELOG, APACHEERRORLOG, SYSLOG, RFC3339SYSLOG:
  the Amazon Kinesis Agent's patterns (PatternConstants.java), written out
  again below and matched with Python's re against the whole line, as the
  agent's Matcher.matches() does.

Only the values a parser gives are normalised (names, `-`, int types); a key
the parser has no answer for is left out, and is then not compared.
"""

import csv
import json
import re
import sys


def apache(fmt):
    import apache_log_parser

    parse = apache_log_parser.make_parser(fmt)

    def dash(v):
        return None if v == "-" else v

    def number(v):
        return None if v == "-" else int(v)

    def read(line):
        r = parse(line)
        out = {
            "host": r["remote_host"],
            "ident": dash(r["remote_logname"]),
            "user": dash(r["remote_user"]),
            "time": r["time_received"][1:-1],
            "code": number(r["status"]),
            "size": number(r["response_bytes_clf"]),
        }
        # An empty method: the library could not split the request line.
        if r["request_method"]:
            ver = r["request_http_ver"]
            out["method"] = r["request_method"]
            out["path"] = r["request_url"]
            out["protocol"] = "HTTP/" + ver if ver else None
        if "request_header_referer" in r:
            out["referer"] = dash(r["request_header_referer"])
            out["agent"] = dash(r["request_header_user_agent"])
        return out

    return read


def rfc5424():
    from syslog_rfc5424_parser import SyslogMessage

    def nil(v):
        return None if v in ("-", None) else str(v)

    def read(line):
        m = SyslogMessage.parse(line)
        pri = int(m.facility) * 8 + int(m.severity)
        out = {
            "pri": pri,
            "facility": int(m.facility),
            "severity": int(m.severity),
            "version": m.version,
            "time": nil(m.timestamp),
            "host": nil(m.hostname),
            "app": nil(m.appname),
            "procid": nil(m.procid),
            "msgid": nil(m.msgid),
            "structured_data": m.sd or None,
            "message": m.msg,
        }
        return out

    return read


def rfc3164():
    import syslogmp

    def read(line):
        data = line.encode("utf-8")
        m = syslogmp.parse(data)
        facility, severity = int(m.facility.value), int(m.severity.value)
        pri_len = data.index(b">") + 1
        return {
            "pri": facility * 8 + severity,
            "facility": facility,
            "severity": severity,
            # The 15 bytes syslogmp read as the time.
            "time": data[pri_len : pri_len + 15].decode("ascii"),
            "host": m.hostname,
            # syslogmp does not split the tag from the message.
            "tag_and_message": m.message.decode("utf-8"),
        }

    return read


def logfmt_reader():
    import logfmt

    def read(line):
        return logfmt.parse_line(line)

    return read


# The Kinesis Agent's PatternConstants.java, the Java string literals written
# as Python raw strings (`"\\w"` is `\w`). re.ASCII: Java's \w, \d, \s and \b
# are ASCII.
INT = r"(?:[+-]?(?:[0-9]+))"
POSINT = r"(?:[1-9][0-9]*)"
NONNEGINT = r"(?:[0-9]+)"
ANYDATA = r".*"
WORD = r"\w+"
NOQUOTE = r'[^"]+'
IP = r"(?:[\d\.]+)"
HOSTNAME = r"(?:[\w\-]+)(?:\.(?:[\w\-]+))*(?:\.?|\b)"
IPORHOST = "(?:" + HOSTNAME + "|" + IP + ")"
URIHOST = "(?:" + IPORHOST + "(?::" + POSINT + ")?)"
USER = r"(?:[a-zA-Z0-9._-]+)"
MONTHDAY = r"(?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9])"
DAY = r"(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?)"
MONTH = r"\b(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|Sep(?:tember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\b"
YEAR = r"(?:[1-9]\d*)"
HOUR = r"(?:2[0123]|[01]?[0-9])"
MINUTE = r"(?:[0-5][0-9])"
SECOND = r"(?:(?:[0-5]?[0-9]|60)(?:[:\.,][0-9]+)?)"
TIME = "(?:" + HOUR + ":" + MINUTE + ":" + SECOND + ")"
HTTPDATE = "(?:" + MONTHDAY + "/" + MONTH + "/" + YEAR + ":" + TIME + r"\s" + INT + ")"
APACHEERRORLOGTIMESTAMP = (
    "(?:" + DAY + r"\s+" + MONTH + r"\s+" + MONTHDAY + r"\s+" + TIME + r"\s+" + YEAR + ")"
)
SYSLOGTIMESTAMP = "(?:" + MONTH + r"\s+" + MONTHDAY + r"\s+" + TIME + ")"
RFC3339 = r"(?:\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?:Z|(?:[-+]\d{2}:\d{2}))"
SYSLOGFACILITY = "<" + NONNEGINT + "." + NONNEGINT + ">"
PROG = r"([\w\._/%-]+)"
SYSLOGPROG = PROG + r"(?:\[(" + POSINT + r")\])?"
COMMON_APACHE_LOG = (
    "^(" + IPORHOST + ") (" + USER + ") (" + USER + r") \[(" + HTTPDATE + r")\] "
    '"(' + NOQUOTE + ')" (' + INT + r"|\-) (" + INT + r"|\-)"
)
COMBINED_APACHE_LOG = COMMON_APACHE_LOG + ' "(' + NOQUOTE + ')" "(' + NOQUOTE + ')"'
APACHE_ERROR_LOG = (
    r"^\[(" + APACHEERRORLOGTIMESTAMP + r")\] \[(?:(" + WORD + "):)?(" + WORD + r")\] "
    r"\[pid (" + NONNEGINT + ")(?::tid (" + NONNEGINT + r"))?\] "
    r"\[client (" + URIHOST + r")\] (" + ANYDATA + ")"
)
SYSLOG_BASE = (
    "^(" + SYSLOGTIMESTAMP + ") (?:" + SYSLOGFACILITY + " )?(" + USER + ") "
    + SYSLOGPROG + ": (" + ANYDATA + ")"
)
RFC3339_SYSLOG_BASE = (
    "^(" + RFC3339 + ") (?:" + SYSLOGFACILITY + " )?(" + USER + ") "
    + SYSLOGPROG + ": (" + ANYDATA + ")"
)

COMMON_FIELDS = ["host", "ident", "authuser", "datetime", "request", "response", "bytes"]
SYSLOG_FIELDS = ["timestamp", "hostname", "program", "processid", "message"]
AGENT = {
    # ApacheLogParser appends ".*" to the access patterns and turns "-" into null.
    "COMMONAPACHELOG": (COMMON_APACHE_LOG + ".*", COMMON_FIELDS, True),
    "COMBINEDAPACHELOG": (COMBINED_APACHE_LOG + ".*", COMMON_FIELDS + ["referer", "agent"], True),
    "APACHEERRORLOG": (
        APACHE_ERROR_LOG,
        ["timestamp", "module", "severity", "processid", "threadid", "client", "message"],
        True,
    ),
    # SysLogParser keeps "-".
    "SYSLOG": (SYSLOG_BASE, SYSLOG_FIELDS, False),
    "RFC3339SYSLOG": (RFC3339_SYSLOG_BASE, SYSLOG_FIELDS, False),
}


def agent(name):
    pattern, fields, dash_is_null = AGENT[name]
    regex = re.compile(pattern, re.ASCII)

    def read(line):
        m = regex.fullmatch(line)
        if m is None:
            raise ValueError("Invalid log entry given the entry pattern")
        values = m.groups()
        assert len(values) == len(fields)
        return {
            k: (None if dash_is_null and v == "-" else v) for k, v in zip(fields, values)
        }

    return read


def line_records(path):
    with open(path, encoding="utf-8", newline="") as f:
        for n, line in enumerate(f.read().split("\n"), 1):
            yield n, line.removesuffix("\r")


def csv_records(path, columns):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        start = 1
        for row in reader:
            if len(row) != len(columns):
                yield start, ValueError(f"{len(row)} fields, {len(columns)} columns")
            else:
                yield start, dict(zip(columns, row))
            start = reader.line_num + 1


def main():
    fmt, path = sys.argv[1], sys.argv[2]
    if fmt == "csv":
        records = csv_records(path, sys.argv[3].split(","))
        read = None
    else:
        readers = {
            "apache_common": lambda: apache('%h %l %u %t "%r" %>s %b'),
            "apache_combined": lambda: apache(
                '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'
            ),
            "syslog_rfc5424": rfc5424,
            "syslog_rfc3164": rfc3164,
            "logfmt": logfmt_reader,
        }
        read = readers[fmt]() if fmt in readers else agent(fmt)
        records = line_records(path)
    lines = list(records)
    # A file ends with a newline: no record after it.
    if read is not None and lines and lines[-1][1] == "":
        lines.pop()
    for n, item in lines:
        try:
            out = read(item) if read is not None else item
            if isinstance(out, Exception):
                raise out
        except Exception as e:  # the parser refused the line
            out = {"error": f"{type(e).__name__}: {e}"[:200]}
        print(json.dumps({"line": n, **out}, ensure_ascii=False))


if __name__ == "__main__":
    main()
