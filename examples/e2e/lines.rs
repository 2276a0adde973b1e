//! The generated log lines: `LINE_BYTES` bytes each, starting with the line's
//! number, ending with a newline; or, with [`apache`], Apache combined access
//! lines of exactly `LINE_BYTES` bytes (see [`fill_apache`]). Owns no state:
//! `deliver` and `backlog` write them to the tailed file with [`write_lines`]; the
//! socket client role (`main`) sends them with [`send_lines`].

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

/// Writes `lines` lines of `line_bytes` bytes to a new file at `path`.
pub(crate) fn write_lines(path: &Path, lines: u64, line_bytes: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("log file"));
    let mut line = new_line(line_bytes);
    for i in 0..lines {
        fill_line(&mut line, i);
        f.write_all(&line).expect("write");
    }
    f.flush().expect("flush");
}

/// The socket client: sends `lines` lines over `connections` connections, each a
/// contiguous share, in writes of about 64 KiB.
pub(crate) fn send_lines(socket: &Path, lines: u64, line_bytes: usize, connections: usize) {
    let connections = connections.max(1) as u64;
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let socket = socket.to_owned();
            std::thread::spawn(move || {
                let (from, to) = (lines * c / connections, lines * (c + 1) / connections);
                send_share(&socket, from, to, line_bytes);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender thread");
    }
}

/// Sends lines `from..to` over one connection.
fn send_share(socket: &Path, from: u64, to: u64, line_bytes: usize) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect to the agent");
    let per_write = (64 << 10) / line_bytes as u64 + 1;
    let mut buf = new_line(line_bytes).repeat(per_write as usize);
    let mut i = from;
    while i < to {
        let n = per_write.min(to - i);
        for (k, line) in buf.chunks_mut(line_bytes).take(n as usize).enumerate() {
            fill_line(line, i + k as u64);
        }
        stream
            .write_all(&buf[..n as usize * line_bytes])
            .expect("send lines");
        i += n;
    }
}

/// Whether the lines are Apache combined access lines: `E2E_LINES=apache`, or
/// any `E2E_PARSE` (its presets read these lines). The socket client, a child
/// process, inherits the variables.
pub(crate) fn apache() -> bool {
    static APACHE: OnceLock<bool> = OnceLock::new();
    *APACHE.get_or_init(|| {
        std::env::var("E2E_LINES").is_ok_and(|v| v == "apache")
            || std::env::var("E2E_PARSE").is_ok_and(|v| !v.is_empty())
    })
}

/// Line `i`: an Apache line, or its number at the start of `line` (its `x`s
/// and newline stay).
fn fill_line(line: &mut [u8], i: u64) {
    if apache() {
        return fill_apache(line, i);
    }
    let head = format!("{i:012} ");
    line[..head.len()].copy_from_slice(head.as_bytes());
}

fn new_line(line_bytes: usize) -> Vec<u8> {
    let mut line = vec![b'x'; line_bytes];
    *line.last_mut().expect("line_bytes > 0") = b'\n';
    line
}

const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/118.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15",
    "curl/8.4.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
    "python-requests/2.31.0",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
];
const PATHS: [&str; 5] = [
    "/products/",
    "/api/v1/orders/",
    "/static/img/",
    "/search/",
    "/cart/",
];
const REFERERS: [&str; 4] = [
    "-",
    "https://www.example.com/",
    "https://shop.example.com/checkout",
    "https://www.google.com/",
];
const CODES: [u16; 8] = [200, 200, 200, 200, 304, 404, 201, 500];
/// What pads a line to its length (then `x`s).
const QUERY: &[u8] = b"?session=a81f3c9e7d2b&page=3&per_page=25&sort=recent&lang=en-US\
    &utm_source=newsletter&utm_medium=email&utm_campaign=autumn-sale-2023&ref=homepage-banner&x=";
const METHODS: [&str; 4] = ["GET", "GET", "POST", "HEAD"];

/// Line `i` as an Apache combined access line of exactly `line.len()` bytes
/// (the newline included): client address, user, method, path, status, size,
/// referer and user agent vary with a hash of `i`; the path holds `i` (so every
/// line is unique) and a query string pads the line to its length; a user agent
/// too long for the room left is cut.
fn fill_apache(line: &mut [u8], i: u64) {
    let (h, g) = (mix(i), mix(!i));
    let pick = |shift: u32, n: usize| (g >> shift) as usize % n;
    let ip = format!(
        "{}.{}.{}.{}",
        1 + (h & 0xdf),
        (h >> 8) & 0xff,
        (h >> 16) & 0xff,
        1 + (h >> 24) % 254
    );
    let user = if pick(32, 8) == 0 { "frank" } else { "-" };
    let secs = 49_000 + i / 2000;
    let time = format!(
        "10/Oct/2023:{:02}:{:02}:{:02} +0000",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    let code = CODES[pick(35, CODES.len())];
    let size = if code == 304 {
        "-".to_owned()
    } else {
        (h >> 40 & 0x1ffff).to_string()
    };
    let head = format!(
        "{ip} - {} [{time}] \"{} {}{i}",
        user,
        METHODS[pick(43, 4)],
        PATHS[pick(45, 5)]
    );
    let tail = format!(" HTTP/1.1\" {code} {size} \"{}\" \"", REFERERS[pick(48, 4)]);
    let ua = USER_AGENTS[pick(50, USER_AGENTS.len())];
    let room = (line.len().checked_sub(head.len() + tail.len() + 2))
        .expect("LINE_BYTES too small for an Apache line (160 or more)");
    let ua = &ua[..ua.len().min(room)];
    let pad = room - ua.len();
    let query = &QUERY[..pad.min(QUERY.len())];
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(query);
    out.resize(out.len() + pad - query.len(), b'x');
    out.extend_from_slice(tail.as_bytes());
    out.extend_from_slice(ua.as_bytes());
    out.extend_from_slice(b"\"\n");
    line.copy_from_slice(&out);
}

/// A 64-bit mix of `i` (splitmix64's finaliser).
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
