//! Connection workers: one single-threaded runtime per core, each serving the client connections
//! handed to it from their first byte to their last.
//!
//! Why: on tokio's work-stealing runtime one proxied request crossed threads several times — the
//! tunnel's task, the upstream connection's task, the HTTP/2 connection all tunnels share — and
//! every crossing was a futex wake-up, a contended lock or memory freed into another thread's
//! malloc arena. With the whole runtime on one thread keyswap spent a quarter less user time per
//! request over HTTP/1.1 and a third less over HTTP/2 (docs/benchmarks.md, session 8). Workers
//! keep that on every core: a connection, the tasks it spawns and the upstream connections it
//! uses stay on one thread, because the upstream pool has a shard per worker ([`current`]).
//!
//! Every worker accepts on its own copy of the listening socket, so a connection starts on the
//! thread that serves it. The price is the balance work stealing gave for free: a worker that
//! serves two more connections than the least busy one hands a new connection over to it.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

thread_local! {
    /// This thread's worker index; `None` off the workers (the main runtime).
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker running the calling thread, if it is one.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// How many workers to start: one per core the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The running workers, shared by the listeners that hand them connections.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    /// Connections this worker serves now.
    open: Arc<AtomicUsize>,
}

/// Stops the workers' runtimes when dropped, cancelling what they still serve. Held apart from
/// [`Workers`] because connection tasks hold those: the runtimes must not wait on their own tasks.
pub struct Stop {
    _senders: Vec<oneshot::Sender<()>>,
}

/// Takes a connection off its worker's count when its task ends, however it ends.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(open: &Arc<AtomicUsize>) -> Open {
        open.fetch_add(1, Ordering::Relaxed);
        Open(open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` workers (at least one), each a thread running its own runtime.
    pub fn start(count: usize) -> std::io::Result<(Arc<Workers>, Stop)> {
        let mut workers = Vec::with_capacity(count.max(1));
        let mut senders = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let (stop, stopped) = oneshot::channel::<()>();
            let (started, handle) = std::sync::mpsc::channel();
            // The runtime is built on its own thread, and dropped there: a runtime dropped in
            // the caller's async context (a thread that failed to start) would panic.
            std::thread::Builder::new()
                .name(format!("keyswap-worker-{index}"))
                .spawn(move || {
                    let runtime = match Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(e) => return drop(started.send(Err(e))),
                    };
                    let _ = started.send(Ok(runtime.handle().clone()));
                    INDEX.with(|i| i.set(Some(index)));
                    // Runs the spawned connections until told to stop (or the sender drops).
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended as it started"))??;
            workers.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
            });
            senders.push(stop);
        }
        Ok((Arc::new(Workers { workers }), Stop { _senders: senders }))
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Runs `task` on worker `index` (a listener's accept loop), outside the connection counts.
    pub fn run_on<F>(&self, index: usize, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.workers[index.min(self.workers.len() - 1)]
            .handle
            .spawn(task)
    }

    /// Serves a connection accepted on the calling worker: there, unless another worker serves
    /// at least two fewer connections, which then takes it (the socket moves to its reactor).
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let least = self.least_busy();
        let here = current().filter(|&h| {
            self.workers.get(h).is_some_and(|w| {
                w.open.load(Ordering::Relaxed)
                    <= self.workers[least].open.load(Ordering::Relaxed) + 1
            })
        });
        match here {
            Some(h) => {
                let open = Open::count(&self.workers[h].open);
                tokio::spawn(async move {
                    let _open = open;
                    serve(stream).await;
                });
            }
            None => match stream.into_std() {
                Ok(stream) => self.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => serve(stream).await,
                        Err(e) => warn!(error = %e, "a worker cannot take a connection"),
                    }
                }),
                Err(e) => warn!(error = %e, "cannot hand a connection to another worker"),
            },
        }
    }

    /// Serves `connection` on the worker with the fewest open connections.
    pub fn spawn<F>(&self, connection: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = &self.workers[self.least_busy()];
        let open = Open::count(&worker.open);
        worker.handle.spawn(async move {
            let _open = open;
            connection.await;
        });
    }

    /// The worker with the fewest open connections (the first of equals).
    fn least_busy(&self) -> usize {
        (0..self.workers.len())
            .min_by_key(|&i| self.workers[i].open.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Spawns a connection that reports the worker it runs on and lasts until released.
    fn connection(workers: &Workers) -> (Option<usize>, oneshot::Sender<()>) {
        let (release, released) = oneshot::channel::<()>();
        let (seen_tx, seen_rx) = mpsc::channel();
        workers.spawn(async move {
            let _ = seen_tx.send(current());
            let _ = released.await;
        });
        (seen_rx.recv().unwrap(), release)
    }

    #[test]
    fn a_connection_goes_to_the_least_busy_worker_and_runs_on_its_thread() {
        let (workers, _stop) = Workers::start(2).unwrap();
        let (first, release_first) = connection(&workers);
        let (second, _hold) = connection(&workers);
        assert_eq!((first, second), (Some(0), Some(1)));
        // The first one ends: the next connection goes to the worker it leaves idle.
        release_first.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while workers.workers[0].open.load(Ordering::Relaxed) != 0 {
            assert!(
                Instant::now() < deadline,
                "the ended connection is still counted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(connection(&workers).0, Some(0));
        assert_eq!(current(), None, "the test's own thread is no worker");
    }

    #[test]
    fn a_worker_that_accepts_everything_hands_connections_to_an_idle_one() {
        let (workers, _stop) = Workers::start(2).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (seen_tx, seen_rx) = mpsc::channel();
        let served = workers.clone();
        // Only worker 0 accepts: the hand-over alone spreads the connections.
        workers.run_on(0, async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = seen_tx.clone();
                served.serve(stream, move |_stream| async move {
                    let _ = seen.send(current());
                    std::future::pending::<()>().await;
                });
            }
        });
        let mut ran_on = [0; 2];
        let clients: Vec<_> = (0..6)
            .map(|_| {
                let client = std::net::TcpStream::connect(addr).unwrap();
                let worker = seen_rx.recv_timeout(Duration::from_secs(5)).unwrap();
                ran_on[worker.unwrap()] += 1;
                client
            })
            .collect();
        let open = |i: usize| workers.workers[i].open.load(Ordering::Relaxed);
        assert_eq!((open(0), open(1)), (4, 2), "within two of each other");
        assert_eq!(ran_on, [4, 2], "each served on the worker that counts it");
        drop(clients);
    }
}
