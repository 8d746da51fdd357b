//! The admin HTTP/1.1 server: `GET /metrics` (Prometheus text format), `GET /healthz`
//! (200 while running, 503 once shutdown began), `GET /status` (JSON: the counters,
//! the configuration in force and the last reload's outcome) and the live view: `GET /`
//! (a self-contained page, [`LIVE_PAGE`], that polls the rest), `GET /live/state` (JSON:
//! health, counters and each stream's latest result) and `GET /live/panel/{stream}.png`,
//! `GET /live/trend/{stream}.png` (figures of [`crate::render`], rendered on request and
//! cached per result by [`crate::daemon::live::LiveView`]). One request per connection;
//! anything else gets 404 or 405. Requests are bounded in size and time so a stuck client
//! cannot hold resources.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Metrics;
use crate::daemon::live::{Figure, LiveView};

/// Largest request head read, bytes.
const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The live view's page: HTML, CSS and JavaScript in one file, nothing loaded from
/// elsewhere.
pub const LIVE_PAGE: &str = include_str!("live.html");

/// Serves until the task is aborted or dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, live: Arc<LiveView>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let live = live.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &metrics, &live).await {
                tracing::debug!(%peer, error = %e, "admin server: connection failed");
            }
        });
    }
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    fn json(value: &serde_json::Value) -> Self {
        Response {
            status: "200 OK",
            content_type: "application/json",
            body: format!("{value}\n").into_bytes(),
        }
    }
}

/// `/live/state`: health, the counters and every stream of the live view.
fn live_state(metrics: &Metrics, live: &LiveView) -> serde_json::Value {
    let healthy = metrics.healthy.load(Relaxed);
    serde_json::json!({
        "healthy": healthy,
        "status": metrics.status_json(if healthy { "running" } else { "stopping" }),
        "streams": live.state_json(),
    })
}

/// `/live/{panel,trend}/{stream}.png`.
async fn figure(live: &LiveView, which: Figure, name: &str) -> Response {
    let Some(id) = name
        .strip_suffix(".png")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return Response::text("404 Not Found", "not found\n");
    };
    match live.figure(id, which).await {
        None => Response::text("404 Not Found", "no such stream\n"),
        Some(Ok(png)) => Response {
            status: "200 OK",
            content_type: "image/png",
            body: png.to_vec(),
        },
        Some(Err(e)) => {
            tracing::warn!(stream_id = id, error = %e, "live view: cannot render");
            Response::text("500 Internal Server Error", "cannot render\n")
        }
    }
}

async fn route(path: &str, metrics: &Metrics, live: &LiveView) -> Response {
    match path {
        "/" => Response {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            body: LIVE_PAGE.as_bytes().to_vec(),
        },
        "/metrics" => Response {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics.render().into_bytes(),
        },
        "/healthz" if metrics.healthy.load(Relaxed) => Response::text("200 OK", "ok\n"),
        "/healthz" => Response::text("503 Service Unavailable", "shutting down\n"),
        "/status" => Response::json(&metrics.status_report()),
        "/live/state" => Response::json(&live_state(metrics, live)),
        _ => {
            if let Some(name) = path.strip_prefix("/live/panel/") {
                figure(live, Figure::Panel, name).await
            } else if let Some(name) = path.strip_prefix("/live/trend/") {
                figure(live, Figure::Trend, name).await
            } else {
                Response::text("404 Not Found", "not found\n")
            }
        }
    }
}

async fn handle(mut stream: TcpStream, metrics: &Metrics, live: &LiveView) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if buf.len() > MAX_REQUEST {
                return Ok(false);
            }
        }
    })
    .await;
    let complete = matches!(head, Ok(Ok(true)));
    let line = String::from_utf8_lossy(&buf);
    let mut words = line.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let response = if !complete {
        Response::text("400 Bad Request", "bad request\n")
    } else if method != "GET" {
        Response::text("405 Method Not Allowed", "only GET\n")
    } else {
        route(path.split('?').next().unwrap_or(""), metrics, live).await
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn routes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.frames_processed.store(7, Relaxed);
        metrics.set_device("cpu");
        let live = Arc::new(LiveView::new(4, metrics.clone()));
        let server = tokio::spawn(serve(listener, metrics.clone(), live));
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("\npleura_frames_processed_total 7\n"), "{r}");
        assert!(
            r.contains("\npleura_device_info{device=\"cpu\"} 1\n"),
            "{r}"
        );
        // A reloaded stage on another device is reported from then on.
        metrics.set_device("cuda:0");
        let r = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.contains("\npleura_device_info{device=\"cuda:0\"} 1\n"),
            "{r}"
        );
        let r = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK") && r.ends_with("ok\n"),
            "{r}"
        );
        metrics.healthy.store(false, Relaxed);
        let r = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        metrics.set_in_force(serde_json::json!({ "authenticated": false }));
        metrics.set_last_reload(Some("[daemon] key_file: cannot read /nope"));
        let r = get(addr, "GET /status HTTP/1.1\r\n\r\n").await;
        assert!(r.contains("Content-Type: application/json"), "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["state"], "stopping");
        assert_eq!(body["frames_processed"], 7);
        assert_eq!(body["in_force"]["authenticated"], false);
        assert_eq!(body["last_reload"]["applied"], false);
        assert!(body["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("key_file"));
        let r = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        server.abort();
    }

    /// The page loads nothing from elsewhere; `/live/state` lists the stream the store
    /// holds with its counters; its figures are PNGs, other streams' are 404.
    #[tokio::test]
    async fn live_view_routes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.frames_processed.store(3, Relaxed);
        let live = Arc::new(LiveView::new(4, metrics.clone()));
        live.result(crate::daemon::live::tests::result(7, 12, 0.7));
        let server = tokio::spawn(serve(listener, metrics.clone(), live));
        let r = get(addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.contains("Content-Type: text/html"), "{r}");
        let page = r.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(page, LIVE_PAGE);
        assert!(
            !page.contains("://") && !page.contains("@import"),
            "self-contained"
        );
        assert!(page.contains("/live/state") && page.contains("/live/panel/"));
        let r = get(addr, "GET /live/state HTTP/1.1\r\n\r\n").await;
        let body: serde_json::Value =
            serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["healthy"], true);
        assert_eq!(body["status"]["frames_processed"], 3);
        assert_eq!(body["streams"][0]["stream_id"], "7");
        assert_eq!(body["streams"][0]["sequence"], 12);
        for path in ["/live/panel/7.png", "/live/trend/7.png"] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path}?v=1 HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = String::from_utf8_lossy(&out[..split]);
            assert!(head.starts_with("HTTP/1.1 200 OK"), "{path}: {head}");
            assert!(head.contains("Content-Type: image/png"), "{head}");
            assert_eq!(&out[split + 4..split + 12], b"\x89PNG\r\n\x1a\n", "{path}");
        }
        for path in [
            "/live/panel/8.png",
            "/live/panel/x.png",
            "/live/other/7.png",
        ] {
            let r = get(addr, &format!("GET {path} HTTP/1.1\r\n\r\n")).await;
            assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
        }
        server.abort();
    }
}
