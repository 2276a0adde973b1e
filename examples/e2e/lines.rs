//! The generated log lines: `LINE_BYTES` bytes each, starting with the line's
//! number, ending with a newline. Owns no state: `deliver` and `backlog` write them
//! to the tailed file with [`write_lines`]; the socket client role (`main`) sends
//! them with [`send_lines`].

use std::io::Write;
use std::path::Path;

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

/// Writes line `i`'s number at the start of `line` (its `x`s and newline stay).
fn fill_line(line: &mut [u8], i: u64) {
    let head = format!("{i:012} ");
    line[..head.len()].copy_from_slice(head.as_bytes());
}

fn new_line(line_bytes: usize) -> Vec<u8> {
    let mut line = vec![b'x'; line_bytes];
    *line.last_mut().expect("line_bytes > 0") = b'\n';
    line
}
