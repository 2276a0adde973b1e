//! The sample lines of each format: real-looking lines, edge cases, and lines
//! the format's parsers must refuse. Line numbers in [`super::known`] count
//! from 1 in these lists.

/// Apache's Common Log Format (`%h %l %u %t "%r" %>s %b`).
pub const APACHE_COMMON: &[&str] = &[
    r#"192.0.2.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#,
    // IPv6 client, no body.
    r#"2001:db8:85a3::8a2e:370:7334 - - [06/Dec/2026:16:22:03 +0000] "POST /api/v1/items?id=7&x=%20y HTTP/1.1" 201 -"#,
    r#"::1 - - [06/Dec/2026:16:22:03 +0000] "OPTIONS * HTTP/1.0" 200 -"#,
    // An escaped quote in the request (Apache writes `\"`).
    r#"203.0.113.9 ident-x alice [06/Dec/2026:16:22:03 +0100] "GET /a\"b HTTP/1.1" 404 512"#,
    // No request line at all (a timed-out connection).
    r#"web-1.example.com - - [06/Dec/2026:16:22:03 +0100] "-" 408 -"#,
    r#"198.51.100.4 - - [06/Dec/2026:16:22:03 +0100] "GET / HTTP/2.0" 200 0"#,
    // A user name with a space, and a status of `-`.
    r#"192.0.2.77 - john smith [06/Dec/2026:16:22:03 -0000] "DELETE /v2/x HTTP/1.1" - -"#,
    // A client that sent a space in the target.
    r#"192.0.2.1 - - [06/Dec/2026:16:22:03 +0000] "GET /search?q=a b HTTP/1.1" 400 226"#,
    // A byte escape.
    r#"192.0.2.1 - - [06/Dec/2026:16:22:03 +0000] "GET /caf\xc3\xa9 HTTP/1.1" 200 17"#,
    // A combined line read as common: the tail is ignored.
    r#"192.0.2.1 - - [06/Dec/2026:16:22:03 +0000] "GET / HTTP/1.1" 200 17 "-" "curl/8.5.0""#,
    // Refused: not an access log line, a status that is no number, no status.
    "garbage that is no log line",
    r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 2xx 0"#,
    r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1""#,
];

/// Apache's Combined Log Format.
pub const APACHE_COMBINED: &[&str] = &[
    r#"203.0.113.9 - alice [10/Oct/2026:13:55:36 +0200] "GET /cart?id=7 HTTP/1.1" 200 5120 "https://example.com/" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91""#,
    r#"2001:db8::7 - - [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.1" 304 - "-" "curl/8.5.0""#,
    r#"192.0.2.1 - - [06/Dec/2026:16:22:03 +0000] "GET /q?s=%22x%22 HTTP/1.1" 200 4 "https://example.com/search?q=shoes&page=2#top" "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1""#,
    // An escaped quote in the user agent.
    r#"192.0.2.1 - - [06/Dec/2026:16:22:03 +0000] "GET / HTTP/1.1" 200 4 "-" "Mozilla/5.0 \"quoted\" bot""#,
    // `%D` added at the end of the format.
    r#"192.0.2.1 - - [06/Dec/2026:16:22:03 +0000] "HEAD /health HTTP/1.1" 200 - "-" "kube-probe/1.29" 1234"#,
    r#"198.51.100.23 - bob [06/Dec/2026:16:22:03 +0530] "PUT /upload HTTP/2.0" 413 377 "-" "python-requests/2.31.0""#,
    r#"::ffff:192.0.2.5 - - [06/Dec/2026:16:22:03 +0000] "-" 400 0 "-" "-""#,
    // Refused: a common line, garbage.
    r#"192.0.2.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#,
    "garbage that is no log line",
];

/// Apache 2.4's error log, as the Kinesis Agent's APACHEERRORLOG reads it.
pub const APACHE_ERROR: &[&str] = &[
    "[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico",
    "[Wed Oct 11 14:32:52 2000] [error] [pid 1234] [client 192.0.2.1:5678] client denied by server configuration: /export/home/live/ap/htdocs/test",
    "[Sun Dec 06 16:22:03.123456 2026] [ssl:warn] [pid 812:tid 140019] [client web-1.example.com:55012] -",
    // Refused: an IPv6 client, a 2.2 line without the pid, garbage.
    "[Sun Dec 06 16:22:03.123456 2026] [proxy:error] [pid 812:tid 140019] [client 2001:db8::1] AH00957: HTTP: attempt to connect to [::1]:8080 failed",
    "[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] client denied by server configuration",
    "garbage that is no log line",
];

/// RFC 3164 lines with a PRI (and some without, which syslogmp refuses).
pub const RFC3164: &[&str] = &[
    "<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8",
    "<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
    "<165>Aug 24 05:34:00 mymachine myproc[10]: %% It's time to make the do-nuts.  %%  Ingredients: Mix=OK, Jeans=OK",
    "<0>Oct 22 10:52:12 scapegoat sched[0]: That's All Folks!",
    "<86>Dec  6 16:22:03 web-1 sshd: Accepted publickey for deploy from 2001:db8::2 port 52144 ssh2",
    "<30>Dec  6 16:22:03 web-1 postfix/smtpd[9123]: connect from unknown[203.0.113.9]",
    "<191>Jan  1 00:00:00 host app[abc]: a pid that is no number",
    // No PRI: rsyslog's default file template.
    "Dec  6 16:22:03 web-1 CRON[2212]: (root) CMD (run-parts /etc/cron.hourly)",
    // An RFC 3339 time in the place of the BSD one (RSYSLOG_FileFormat).
    "<34>2026-12-06T16:22:03.003+01:00 web-1 app[1]: started",
    // Refused: a PRI past 191, an hour past 23, no host.
    "<192>Oct 11 22:14:15 host app: x",
    "<34>Oct 11 25:14:15 host app: x",
    "<34>Oct 11 22:14:15",
];

/// RFC 5424 lines.
pub const RFC5424: &[&str] = &[
    "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8",
    "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
    r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry..."#,
    r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#,
    // Escapes in parameter values (RFC 5424 §6.3.3).
    r#"<14>1 2026-12-06T16:22:03.123456+01:00 web-1 app 4242 req [meta@32473 path="C:\\logs\\app" quote="say \"hi\"" bracket="a\]b"] done"#,
    // A parameter repeated within an element.
    r#"<14>1 2026-12-06T16:22:03Z web-1 app - - [origin ip="192.0.2.1" ip="192.0.2.2" software="rsyslogd"] two addresses"#,
    "<14>1 - - - - - -",
    "<14>1 2026-12-06T16:22:03Z web-1 app - - - ",
    "<191>999 2026-12-06T16:22:03-05:00 web-1 app p-1 msg-1 - text with \"quotes\" and [brackets]",
    // Refused: an RFC 3164 line, version 0, an unclosed element, a
    // timestamp that is no RFC 3339 time, a fraction of seven digits.
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
    "<34>0 2003-10-11T22:14:15.003Z host app - - - x",
    r#"<34>1 2003-10-11T22:14:15Z host app - - [x@1 a="b" unclosed"#,
    "<34>1 yesterday host app - - - x",
    "<34>1 2026-12-06T16:22:03.1234567Z host app - - - x",
];

/// logfmt lines.
pub const LOGFMT: &[&str] = &[
    r#"level=info msg="user \"bob\" logged in" took=12ms cached"#,
    "ts=2026-12-06T16:22:03.123Z level=warn caller=server.go:88 msg=\"slow request\" path=/api/v1/items duration=1.52s status=200",
    " lead=space  double=space",
    "a=1 a=2",
    "msg=\"caf\u{e9} \u{2713}\" k=v",
    // An empty value, `=` inside a value, a backslash in a quoted value.
    "key= other=1",
    "url=/a?b=c",
    r#"msg="path C:\\temp\\x""#,
    // Refused by shardline: an unclosed quote, plain text.
    r#"level=error msg="unterminated"#,
    "just some plain text",
];

/// CSV records under the columns `a,b,c`.
pub const CSV: &[&str] = &[
    "1,hello,world",
    r#"2,"hello, world","say ""hi""""#,
    "3,,",
    // A quoted field across two lines.
    "4,\"multi",
    "line\",x",
    r#"5,a"b,c"#,
    r#"6,"x"y,z"#,
    r#"" spaced ", b ,c "#,
    // Refused: too few, too many, an empty line.
    "1,2",
    "1,2,3,4",
    "",
    // A quote that is never closed, at the end of the file.
    "9,x,\"open",
];

/// The Kinesis Agent's SYSLOG.
pub const AGENT_SYSLOG: &[&str] = &[
    "Mar 12 12:00:08 server2 rcd[308]: Loaded 12 packages",
    "Mar  7 04:22:00 web-1 CRON[2212]: (root) CMD (run-parts /etc/cron.hourly)",
    "Oct 11 22:14:15 mymachine <4.2> su: 'su root' failed for lonvick on /dev/pts/8",
    "Dec  6 16:22:03 host postfix/smtpd[9]: connect from unknown[203.0.113.9]",
    "Dec  6 16:22:03 host kernel: -",
    // Refused: a PRI, no tag.
    "<34>Oct 11 22:14:15 mymachine su: x",
    "Dec  6 16:22:03 host no colon here",
];

/// The Kinesis Agent's RFC3339SYSLOG.
pub const AGENT_RFC3339_SYSLOG: &[&str] = &[
    "2024-01-02T03:04:05.123456+00:00 web-1 sshd[812]: Accepted publickey for deploy",
    "2026-12-06T16:22:03Z db-2 postgres[77]: LOG:  checkpoint complete",
    "2026-12-06T16:22:03.5-05:00 host <3.1> app: msg",
    // Refused: a lower-case `t`, a BSD time.
    "2026-12-06t16:22:03Z host app: x",
    "Dec  6 16:22:03 host app: x",
];
