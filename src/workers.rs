//! The threads that serve connections: one single-threaded tokio runtime
//! per thread (`server.workers`, by default one per CPU the process may
//! use), each with its own I/O driver and timers.
//!
//! The accept loop (`conn::serve`, on the main runtime) hands every
//! accepted socket to the worker serving the fewest connections, and the
//! connection lives on that thread until it closes, as an nginx worker's
//! would. Nothing a request does then crosses threads: the socket's
//! readiness, hyper's timers and the response future are all the one
//! thread's, so no request pays for a work-stealing scheduler's wake-ups
//! of another thread (the ceiling benchmark in `scripts/bench_store.py`
//! measured 12–18% more cached reads per second this way than on one
//! multi-threaded runtime, at 2 cores).
//!
//! What this asks of the code a request runs: it must not block its
//! thread, since no other thread takes over its connections meanwhile.
//! Blocking work (LevelDB misses, file reads, parsing a publish) goes
//! through `spawn_blocking`, which each worker's runtime backs with its own
//! bounded pool of blocking threads. State shared between requests
//! (`server::Registry`) is `Sync` and reached through an `Arc`, so which
//! thread serves a connection changes nothing a request sees.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// One worker thread: its runtime's handle, how many connections it
/// serves, and what ends it.
struct Worker {
    handle: Handle,
    load: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// The worker threads (see the module doc).
pub struct Workers {
    workers: Vec<Worker>,
}

/// Counts one connection on its worker for as long as it lives.
struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` worker threads (0: one per CPU the process may use,
    /// `std::thread::available_parallelism`), named `nmr-worker-N`, each
    /// running a current-thread runtime with I/O and timers whose blocking
    /// pool has at most `max_blocking_threads` threads. Errors when a
    /// runtime or thread cannot be made (the OS is out of threads or
    /// memory).
    pub fn start(count: usize, max_blocking_threads: usize) -> io::Result<Workers> {
        let count = if count == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            count
        };
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(max_blocking_threads.max(1))
                .thread_name(format!("nmr-worker-{i}-blocking"))
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            // Dropping the runtime at the end of the thread cancels what is
            // left of its tasks and waits for its blocking tasks to return,
            // so none of them outlives Workers::stop.
            let thread = std::thread::Builder::new()
                .name(format!("nmr-worker-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
            workers.push(Worker {
                handle,
                load: Arc::new(AtomicUsize::new(0)),
                stop,
                thread,
            });
        }
        Ok(Workers { workers })
    }

    /// How many worker threads there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are none (never, once started).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs `make`'s future, one connection's, on the worker serving the
    /// fewest connections; it counts there until the future ends. `make`
    /// runs on that worker, so that what it creates (a tokio socket, a
    /// timer) registers with that worker's driver.
    pub fn spawn<M, F>(&self, make: M)
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
        else {
            return;
        };
        worker.load.fetch_add(1, Ordering::Relaxed);
        let load = Load(worker.load.clone());
        worker.handle.spawn(async move {
            let _load = load;
            make().await
        });
    }

    /// The number of connections each worker serves now, in worker order.
    #[cfg(test)]
    fn loads(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }

    /// Ends every worker: each runtime drops the tasks it still has (the
    /// caller has let connections finish first) and waits for its blocking
    /// tasks, then its thread is joined.
    pub fn stop(self) {
        for worker in self.workers {
            let _ = worker.stop.send(());
            if worker.thread.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Waits (at most 5 s) until `done` holds.
    fn eventually(done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("not reached in 5 s");
    }

    #[test]
    fn each_connection_goes_to_the_least_loaded_worker_and_stays_on_its_thread() {
        let workers = Workers::start(2, 1).unwrap();
        assert_eq!(workers.len(), 2);
        let threads = Arc::new(Mutex::new(Vec::new()));
        let mut releases = Vec::new();
        for _ in 0..4 {
            let (release, released) = oneshot::channel::<()>();
            releases.push(release);
            let threads = threads.clone();
            workers.spawn(move || async move {
                let before = std::thread::current().name().unwrap().to_string();
                let _ = released.await;
                // Still the same thread after waiting: nothing migrates.
                let after = std::thread::current().name().unwrap().to_string();
                threads.lock().unwrap().push((before, after));
            });
        }
        // Four long connections: two on each worker.
        assert_eq!(workers.loads(), vec![2, 2]);
        for release in releases {
            release.send(()).unwrap();
        }
        eventually(|| threads.lock().unwrap().len() == 4);
        eventually(|| workers.loads() == vec![0, 0]);
        let threads = threads.lock().unwrap();
        for (before, after) in threads.iter() {
            assert_eq!(before, after);
            assert!(before.starts_with("nmr-worker-"), "{before}");
        }
        let on_first = threads.iter().filter(|(t, _)| t == "nmr-worker-0").count();
        assert_eq!(on_first, 2, "{threads:?}");
        drop(threads);
        workers.stop();
    }

    #[test]
    fn stop_waits_for_blocking_work_and_cancels_the_rest() {
        let workers = Workers::start(1, 1).unwrap();
        let finished = Arc::new(AtomicUsize::new(0));
        let blocking = finished.clone();
        let (started, is_started) = std::sync::mpsc::channel();
        workers.spawn(move || async move {
            let _ = tokio::task::spawn_blocking(move || {
                started.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                blocking.fetch_add(1, Ordering::SeqCst);
            })
            .await;
            // stop cancels this task wherever it waits; the blocking
            // closure above is not cancelled but waited for.
            std::future::pending::<()>().await;
        });
        workers.spawn(std::future::pending::<()>);
        is_started.recv().unwrap();
        workers.stop();
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the blocking task ran to its end"
        );
    }
}
