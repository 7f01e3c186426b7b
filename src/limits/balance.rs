//! Spreading the main listener's connections evenly over the worker threads.
//!
//! Every worker waits on the same listening socket ([`crate::server::run`]), and the kernel wakes
//! all of them for a new connection: whichever reaches `accept` first takes it, and goes on taking
//! until the queue is empty. When connections arrive in a burst — a client or a load balancer
//! opening its pool of keep-alive connections — the worker that happened to be awake takes most of
//! them and keeps them for their whole life. Measured on 2 cores (`wrk -c64`, per-thread CPU time
//! of a 5-second run): the two workers did 188 and 400 ticks of work, and the busier one's queue
//! set the p99.
//!
//! So each worker counts the connections it holds, and one that holds two more than the least
//! loaded worker hands a connection it just accepted to that worker instead of serving it: the
//! socket moves to the other thread's runtime through its inbox (an unbounded channel; one message
//! per connection handed over, nothing per request). A connection is never moved once it is
//! being served, and a worker whose inbox is gone (it stopped) is skipped. Counting connections,
//! not requests, is what nginx does too (`worker_connections`): cheap, and right for the
//! keep-alive traffic where the imbalance lasts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A connection handed from one worker to another: the socket (out of the first worker's
/// runtime), its peer, and its seat in the receiving worker's count.
pub(crate) type Handover = (std::net::TcpStream, SocketAddr, Seat);

/// The workers sharing one listener: how many connections each holds, and each one's inbox.
#[derive(Debug)]
pub struct Balance {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Handover>]>,
    handed_over: AtomicU64,
}

/// One worker's side of a [`Balance`], given to its accept loop: where to place what it accepts,
/// and what the others hand to it.
pub struct Worker {
    pub(crate) placer: Placer,
    pub(crate) inbox: Inbox,
}

/// Decides, for each connection a worker accepts, which worker serves it.
pub(crate) struct Placer {
    balance: Arc<Balance>,
    index: usize,
}

/// The connections other workers handed to this one.
pub(crate) struct Inbox(mpsc::UnboundedReceiver<Handover>);

impl Balance {
    /// A balance for `workers` workers, and the side of each (in index order).
    pub fn new(workers: usize) -> (Arc<Balance>, Vec<Worker>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
        let balance = Arc::new(Balance {
            open: (0..senders.len()).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: senders.into_boxed_slice(),
            handed_over: AtomicU64::new(0),
        });
        let workers = receivers
            .into_iter()
            .enumerate()
            .map(|(index, inbox)| Worker { placer: Placer { balance: Arc::clone(&balance), index }, inbox: Inbox(inbox) })
            .collect();
        (balance, workers)
    }

    /// Connections each worker holds now (`trousseau_proxy_worker_connections_open`).
    pub fn open_by_worker(&self) -> Vec<usize> {
        self.open.iter().map(|open| open.load(Ordering::Relaxed)).collect()
    }

    /// Connections handed from one worker to another so far.
    pub fn handed_over(&self) -> u64 {
        self.handed_over.load(Ordering::Relaxed)
    }

    /// The worker holding the fewest connections (the lowest index among equals).
    fn least_loaded(&self) -> (usize, usize) {
        self.open
            .iter()
            .enumerate()
            .map(|(index, open)| (index, open.load(Ordering::Relaxed)))
            .min_by_key(|&(index, open)| (open, index))
            .unwrap_or((0, 0))
    }

    fn seat(self: &Arc<Self>, index: usize) -> Seat {
        self.open[index].fetch_add(1, Ordering::Relaxed);
        Seat { balance: Arc::clone(self), index }
    }
}

/// Where a connection this worker just accepted goes.
pub(crate) enum Placed {
    /// Served here; the seat counts it until it is dropped with the connection.
    Here(TcpStream, SocketAddr, Seat),
    /// Handed to a less loaded worker.
    Moved,
}

impl Placer {
    /// Keeps `stream` here, or hands it to the least loaded worker when this one holds two
    /// connections more than that one.
    pub(crate) fn place(&self, stream: TcpStream, peer: SocketAddr) -> Placed {
        let mine = self.balance.open[self.index].load(Ordering::Relaxed);
        let (least, fewest) = self.balance.least_loaded();
        if least == self.index || mine <= fewest + 1 {
            return Placed::Here(stream, peer, self.balance.seat(self.index));
        }
        // Out of this runtime (the socket stays non-blocking), into the other's on arrival.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            // Cannot happen for a socket this runtime registered; if it does, the connection is lost
            // like one refused at the cap.
            Err(_) => return Placed::Moved,
        };
        match self.balance.inboxes[least].send((stream, peer, self.balance.seat(least))) {
            Ok(()) => {
                self.balance.handed_over.fetch_add(1, Ordering::Relaxed);
                Placed::Moved
            }
            // That worker stopped (shutdown): serve it here after all.
            Err(mpsc::error::SendError((stream, peer, _seat))) => match TcpStream::from_std(stream) {
                Ok(stream) => Placed::Here(stream, peer, self.balance.seat(self.index)),
                Err(_) => Placed::Moved,
            },
        }
    }

}

impl Inbox {
    /// The next connection another worker handed to this one.
    pub(crate) async fn handed_over(&mut self) -> Option<(TcpStream, SocketAddr, Seat)> {
        loop {
            let (stream, peer, seat) = self.0.recv().await?;
            match TcpStream::from_std(stream) {
                Ok(stream) => return Some((stream, peer, seat)),
                // Registration failed (out of memory): the connection closes, its seat is freed.
                Err(e) => tracing::warn!(error = %e, "cannot take over a connection from another worker"),
            }
        }
    }
}

/// A connection's place in its worker's count; dropped with the connection.
pub(crate) struct Seat {
    balance: Arc<Balance>,
    index: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.balance.open[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, SocketAddr, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (server, peer, client)
    }

    #[tokio::test]
    async fn a_worker_two_connections_ahead_hands_the_next_one_over() {
        let (balance, mut workers) = Balance::new(2);
        let mut second = workers.pop().unwrap().inbox;
        let first = workers.pop().unwrap().placer;
        let mut kept = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..2 {
            let (server, peer, client) = pair().await;
            clients.push(client);
            match first.place(server, peer) {
                Placed::Here(stream, _, seat) => kept.push((stream, seat)),
                Placed::Moved => panic!("two connections apart is still even enough"),
            }
        }
        let (server, peer, client) = pair().await;
        clients.push(client);
        assert!(matches!(first.place(server, peer), Placed::Moved));
        let (moved, moved_peer, seat) = second.handed_over().await.expect("handed over");
        assert_eq!(moved_peer, peer);
        assert_eq!(moved.peer_addr().unwrap(), peer, "the same socket, now in this runtime");
        assert_eq!(first.balance.least_loaded(), (1, 1));
        assert_eq!(balance.handed_over(), 1);
        // The seat leaves with the connection.
        drop((moved, seat));
        assert_eq!(first.balance.open[1].load(Ordering::Relaxed), 0);
        drop(kept);
        assert_eq!(first.balance.open[0].load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_stopped_worker_gets_nothing() {
        let (balance, mut workers) = Balance::new(2);
        drop(workers.pop());
        let first = workers.pop().unwrap().placer;
        let mut held = Vec::new();
        for _ in 0..5 {
            let (server, peer, client) = pair().await;
            match first.place(server, peer) {
                Placed::Here(stream, _, seat) => held.push((stream, seat, client)),
                Placed::Moved => panic!("handed to a worker that stopped"),
            }
        }
        assert_eq!(first.balance.open[0].load(Ordering::Relaxed), 5);
        assert_eq!(balance.open_by_worker(), [5, 0], "the refused seat was given back");
        assert_eq!(balance.handed_over(), 0);
    }
}
