//! The admin HTTP/1.1 server: `GET /metrics` (Prometheus text format), `GET /healthz`
//! (200 while running, 503 once shutdown began) and `GET /status` (JSON: the counters,
//! the configuration in force and the last reload's outcome). One request per connection; anything
//! else gets 404 or 405. Requests are bounded in size and time so a stuck client cannot
//! hold resources.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Metrics;

/// Largest request head read, bytes.
const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the task is aborted or dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
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
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &metrics).await {
                tracing::debug!(%peer, error = %e, "admin server: connection failed");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
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
    let (status, body) = if !complete {
        ("400 Bad Request", "bad request\n".to_string())
    } else if method != "GET" {
        ("405 Method Not Allowed", "only GET\n".to_string())
    } else {
        match path.split('?').next().unwrap_or("") {
            "/metrics" => ("200 OK", metrics.render()),
            "/healthz" if metrics.healthy.load(Relaxed) => ("200 OK", "ok\n".to_string()),
            "/healthz" => ("503 Service Unavailable", "shutting down\n".to_string()),
            "/status" => ("200 OK", format!("{}\n", metrics.status_report())),
            _ => ("404 Not Found", "not found\n".to_string()),
        }
    };
    let content_type = if path.starts_with("/metrics") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else if path.starts_with("/status") && status.starts_with("200") {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
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
        let server = tokio::spawn(serve(listener, metrics.clone()));
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
}
