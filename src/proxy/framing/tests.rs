use super::*;

fn framing(mode: Mode) -> Framing {
    Framing::new(mode, 100, 65536)
}

/// Feeds `input` whole and returns how much was released, or the refusal.
fn check(mode: Mode, input: &[u8]) -> Result<usize, Refusal> {
    framing(mode).advance(input)
}

fn refused(mode: Mode, input: &str) -> Refusal {
    match check(mode, input.as_bytes()) {
        Err(r) => r,
        Ok(n) => panic!("accepted {n} bytes of {input:?}"),
    }
}

const GET: &str = "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n";

#[test]
fn well_formed_requests_are_released_whole() {
    assert_eq!(check(Mode::Listener, GET.as_bytes()), Ok(GET.len()));
    let post = "POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(check(Mode::Listener, post.as_bytes()), Ok(post.len()));
    let chunked = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    assert_eq!(check(Mode::Tunnel, chunked.as_bytes()), Ok(chunked.len()));
    let pipelined = format!("{GET}{GET}");
    assert_eq!(
        check(Mode::Listener, pipelined.as_bytes()),
        Ok(pipelined.len())
    );
    // Identical duplicate lengths are one length.
    let dup = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi";
    assert_eq!(check(Mode::Tunnel, dup.as_bytes()), Ok(dup.len()));
}

#[test]
fn empty_lines_before_a_request_are_passed_and_a_dribbled_head_is_searched_once() {
    let mut f = framing(Mode::Listener);
    assert_eq!(f.advance(b"\r\n\r\nGET"), Ok(4));
    let mut f = framing(Mode::Listener);
    let head = GET.as_bytes();
    for end in 1..head.len() {
        assert_eq!(f.advance(&head[..end]), Ok(0), "at {end}");
    }
    assert_eq!(f.advance(head), Ok(head.len()));
    // A bare LF arriving late in a dribbled head is still caught.
    let mut f = framing(Mode::Listener);
    assert_eq!(f.advance(b"GET / HTTP/1.1\r"), Ok(0));
    assert_eq!(
        f.advance(b"GET / HTTP/1.1\r\nX: a\n"),
        Err(Refusal::Malformed("a line ends without CR"))
    );
}

#[test]
fn incomplete_heads_are_held_back() {
    let mut f = framing(Mode::Listener);
    assert_eq!(f.advance(&GET.as_bytes()[..20]), Ok(0));
    assert!(f.in_head());
    // A chunked head waits for its first chunk-size line.
    let head = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut f = framing(Mode::Tunnel);
    assert_eq!(f.advance(head.as_bytes()), Ok(0));
    assert_eq!(f.advance(format!("{head}5\r").as_bytes()), Ok(0));
    assert_eq!(
        f.advance(format!("{head}5\r\nhel").as_bytes()),
        Ok(head.len() + 6)
    );
    // With Expect: 100-continue the client waits for us: released at once.
    let expect =
        "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(check(Mode::Tunnel, expect.as_bytes()), Ok(expect.len()));
}

#[test]
fn a_body_is_followed_to_the_next_head() {
    let mut f = framing(Mode::Tunnel);
    let head = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
    assert_eq!(f.advance(head.as_bytes()), Ok(head.len()));
    assert_eq!(f.pass_through(), Some(10));
    f.passed(4);
    assert_eq!(f.pass_through(), Some(6));
    // The rest of the body, then a smuggled-looking second request that is itself malformed.
    let next = b"123456GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        f.advance(next),
        Err(Refusal::Malformed(
            "Content-Length and Transfer-Encoding together"
        ))
    );
}

#[test]
fn ambiguous_lengths_are_refused() {
    for (input, why) in [
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "Content-Length and Transfer-Encoding together",
        ),
        (
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length headers differ",
        ),
        ("Content-Length: 5, 6", "Content-Length is a list"),
        ("Content-Length: 2, 2", "Content-Length is a list"),
        (
            "Content-Length: +3",
            "Content-Length is not a decimal number",
        ),
        (
            "Content-Length: -1",
            "Content-Length is not a decimal number",
        ),
        (
            "Content-Length: 0x10",
            "Content-Length is not a decimal number",
        ),
        (
            "Content-Length: 18446744073709551616",
            "Content-Length is too large",
        ),
        (
            "Content-Length: 99999999999999999999999",
            "Content-Length is not a decimal number",
        ),
        ("Content-Length:", "Content-Length is not a decimal number"),
        (
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding must be exactly `chunked`",
        ),
        (
            "Transfer-Encoding: xchunked",
            "Transfer-Encoding must be exactly `chunked`",
        ),
        (
            "Transfer-Encoding: gzip",
            "Transfer-Encoding must be exactly `chunked`",
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding must be exactly `chunked`",
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding must be exactly `chunked`",
        ),
        (
            "Transfer-Encoding: \x0bchunked",
            "a header value contains NUL, CR or another control character",
        ),
    ] {
        let request =
            format!("POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\n{input}\r\n\r\n0\r\n\r\n");
        assert_eq!(
            refused(Mode::Listener, &request),
            Refusal::Malformed(why),
            "{input:?}"
        );
    }
    let old = "POST http://a.test/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(
        refused(Mode::Listener, old),
        Refusal::Malformed("Transfer-Encoding on HTTP/1.0")
    );
}

#[test]
fn malformed_heads_are_refused() {
    for (input, why) in [
        (
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n",
            "obs-fold (a header continued on the next line)",
        ),
        (
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX: a\0b\r\n\r\n",
            "a header value contains NUL, CR or another control character",
        ),
        (
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX: a\rb\r\n\r\n",
            "a bare CR inside a line",
        ),
        (
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX Y: a\r\n\r\n",
            "a header name is empty or has whitespace or other characters not allowed",
        ),
        (
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX : a\r\n\r\n",
            "a header name is empty or has whitespace or other characters not allowed",
        ),
        (
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n: a\r\n\r\n",
            "a header name is empty or has whitespace or other characters not allowed",
        ),
        (
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nnocolon\r\n\r\n",
            "a header line has no colon",
        ),
        (
            "GET http://a.test/a b HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "the request line is not `METHOD target HTTP/1.1`",
        ),
        (
            "GET  http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "the request line is not `METHOD target HTTP/1.1`",
        ),
        (
            "GET http://a.test/\tb HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "the request target contains whitespace or control characters",
        ),
        (
            "GET http://a.test/ HTTP/1.2\r\nHost: a.test\r\n\r\n",
            "only HTTP/1.1 and HTTP/1.0 are spoken here",
        ),
        (
            "GET http://a.test/ HTTP/2.0\r\nHost: a.test\r\n\r\n",
            "only HTTP/1.1 and HTTP/1.0 are spoken here",
        ),
        (
            "G@T http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "the method is not a token",
        ),
        (
            "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            "more than one Host header",
        ),
        (
            "GET http://a.test/ HTTP/1.1\nHost: a.test\r\n\r\n",
            "a line ends without CR",
        ),
        (
            "CONNECT a.test HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT needs a host:port target",
        ),
        (
            "CONNECT http://a.test:443/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT needs a host:port target",
        ),
        (
            "CONNECT a.test:0 HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT needs a host:port target",
        ),
        (
            "CONNECT a.test:99999 HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT needs a host:port target",
        ),
        (
            "CONNECT user@a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "CONNECT needs a host:port target",
        ),
    ] {
        assert_eq!(
            refused(Mode::Listener, input),
            Refusal::Malformed(why),
            "{input:?}"
        );
    }
    assert_eq!(
        refused(
            Mode::Tunnel,
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n"
        ),
        Refusal::Malformed("CONNECT inside a tunnel")
    );
    // Bare LF is refused even before the head is complete.
    assert_eq!(
        refused(Mode::Listener, "GET / HTTP/1.1\nHost"),
        Refusal::Malformed("a line ends without CR")
    );
}

#[test]
fn bad_chunks_are_refused() {
    let head = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (body, why) in [
        ("zz\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
        ("-5\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
        ("5 x\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
        ("11111111111111111\r\n", "bad chunk size"),
        ("5\nhello\r\n0\r\n\r\n", "a line ends without CR"),
        (
            "5\r\nhelloXX\r\n0\r\n\r\n",
            "chunk data is longer than its size",
        ),
        (
            "5\r\nhello\r\n0\r\nX: a\0\r\n\r\n",
            "a header value contains NUL, CR or another control character",
        ),
        ("5\r\nhello\r\nq\r\n", "bad chunk size"),
    ] {
        let input = format!("{head}{body}");
        assert_eq!(
            refused(Mode::Tunnel, &input),
            Refusal::Malformed(why),
            "{body:?}"
        );
    }
    // Extensions and whitespace before `;` are allowed.
    let ok = format!("{head}5 ;a=\"b\"\r\nhello\r\n0\r\n\r\n");
    assert_eq!(check(Mode::Tunnel, ok.as_bytes()), Ok(ok.len()));
}

#[test]
fn limits_answer_431() {
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let input = format!("GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n{many}\r\n");
    assert_eq!(refused(Mode::Listener, &input), Refusal::TooLarge);
    let big = format!(
        "GET http://a.test/ HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_eq!(refused(Mode::Listener, &big), Refusal::TooLarge);
    // An unfinished head over the limit is refused without waiting for its end.
    let unfinished = format!("GET http://a.test/ HTTP/1.1\r\nX: {}", "a".repeat(70_000));
    assert_eq!(refused(Mode::Listener, &unfinished), Refusal::TooLarge);
}

#[test]
fn connect_and_upgrades_end_the_checking() {
    let mut f = framing(Mode::Listener);
    let connect = b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n\x16\x03\x01garbage";
    assert_eq!(f.advance(connect), Ok(connect.len()));
    assert_eq!(f.pass_through(), Some(u64::MAX));
    let v6 = "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n";
    assert_eq!(check(Mode::Listener, v6.as_bytes()), Ok(v6.len()));
    let mut f = framing(Mode::Tunnel);
    let ws = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
    assert_eq!(f.advance(ws), Ok(ws.len()));
    // h2c is never forwarded, so the connection stays HTTP/1 and stays checked.
    let h2c = "GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nPRI * HTTP/2.0\r\n\r\n";
    assert_eq!(
        check(Mode::Tunnel, h2c.as_bytes()),
        Err(Refusal::Malformed(
            "only HTTP/1.1 and HTTP/1.0 are spoken here"
        ))
    );
}
