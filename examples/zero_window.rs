//! Measurement helper (not a test): opens `conns` HTTP/2 connections to `addr` with `streams`
//! GETs of `path` each, advertising a zero stream window (the client never reads), holds them
//! `hold` seconds, then closes everything and waits `after` seconds.
//!
//!   cargo run --release --example zero_window -- 127.0.0.1:4180 /big/file 20 100 30 5

use std::time::Duration;

use http::Request;
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, path) = (args[1].clone(), args[2].clone());
    let conns: usize = args[3].parse().unwrap();
    let streams: usize = args[4].parse().unwrap();
    let hold: u64 = args[5].parse().unwrap();
    let after: u64 = args.get(6).map_or(0, |a| a.parse().unwrap());
    let mut clients = Vec::new();
    let mut answers = Vec::new();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    for _ in 0..conns {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let (mut client, connection) = h2::client::Builder::new().initial_window_size(0).handshake::<_, bytes::Bytes>(tcp).await.unwrap();
        let task = tokio::spawn(connection);
        for _ in 0..streams {
            client = match client.clone().ready().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("not ready: {e}");
                    break;
                }
            };
            let req = Request::get(format!("http://{addr}{path}")).body(()).unwrap();
            match client.send_request(req, true) {
                Ok((response, _)) => answers.push(tokio::spawn({
                    let statuses = statuses.clone();
                    async move {
                    match tokio::time::timeout(Duration::from_secs(20), response).await {
                        Ok(Ok(r)) => {
                            let status = r.status().as_u16();
                            *statuses.lock().unwrap().entry(status).or_insert(0) += 1;
                            // Keep the stream open, never read.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            drop(r);
                            status
                        }
                        Ok(Err(_)) => 1,
                        Err(_) => 0,
                    }
                }})),
                Err(e) => {
                    eprintln!("send_request: {e}");
                    break;
                }
            }
        }
        clients.push((client, task));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let finished = answers.iter().filter(|a| a.is_finished()).count();
    println!("opened {} streams on {} connections ({} already ended: reset or refused)", answers.len(), conns, finished);
    tokio::time::sleep(Duration::from_secs(hold.saturating_sub(3))).await;
    let mut by_status = std::collections::BTreeMap::new();
    for a in &answers {
        if a.is_finished() {
            *by_status.entry("ended").or_insert(0) += 1;
        } else {
            *by_status.entry("open").or_insert(0) += 1;
        }
    }
    let closed_conns = clients.iter().filter(|(_, t)| t.is_finished()).count();
    println!("after {hold}s: streams {by_status:?}, statuses {:?}, connections closed by the server: {closed_conns}", statuses.lock().unwrap());
    for a in &answers {
        a.abort();
    }
    drop(clients);
    println!("client closed everything");
    tokio::time::sleep(Duration::from_secs(after)).await;
}
