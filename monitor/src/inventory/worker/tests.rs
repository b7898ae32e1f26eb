//! The worker: jobs in order, a hung call abandoned with its thread, the bound on stuck
//! threads, and heartbeats restarting the deadline.

use super::*;

/// A worker whose jobs never touch libvirt (the connection opens only when a job asks).
fn worker(timeout_ms: u64) -> Worker {
    Worker::new(
        "test:///default",
        Access::ReadOnly,
        Duration::from_millis(timeout_ms),
    )
}

fn answer<R>(mut ticket: Ticket<R>, worker: &Worker) -> Poll<R> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match ticket.poll(worker) {
            Poll::Pending if Instant::now() < until => std::thread::sleep(Duration::from_millis(1)),
            other => return other,
        }
    }
}

/// The hung call, once the worker says so (a loaded machine may start the job late).
fn hung_within(w: &Worker) -> Hung {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(h) = w.hung() {
            return h;
        }
        assert!(Instant::now() < until, "the job never passed its deadline");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn jobs_run_in_order_and_answer() {
    let mut w = worker(1000);
    let a = w.submit("a", |_| 1);
    let b = w.submit("b", |_| 2);
    assert_eq!(answer(b, &w), Poll::Done(2));
    assert_eq!(answer(a, &w), Poll::Done(1));
    assert!(w.hung().is_none());
}

#[test]
fn a_call_past_the_deadline_is_abandoned_and_a_fresh_thread_takes_the_next_job() {
    let mut w = worker(50);
    let (release, gate) = mpsc::channel::<()>();
    let stuck = w.submit("hang", move |_| gate.recv().is_ok());
    let queued = w.submit("behind the hang", |_| "ran");
    let hung = hung_within(&w);
    assert_eq!(hung.call, "hang");
    assert!(hung.waited >= Duration::from_millis(50));
    w.abandon();
    assert!(matches!(answer(queued, &w), Poll::Lost(_)));
    // The next job runs at once on a new thread, whatever the old one waits for.
    assert_eq!(answer(w.submit("next", |_| 7), &w), Poll::Done(7));
    // The abandoned call, once it returns, ends its thread without running "behind".
    release.send(()).expect("the stuck job still waits");
    assert!(matches!(
        answer(stuck, &w),
        Poll::Done(true) | Poll::Lost(_)
    ));
    let until = Instant::now() + Duration::from_secs(5);
    while w.stuck.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(w.stuck.load(Ordering::SeqCst), 0);
}

#[test]
fn at_most_max_abandoned_threads_wait_at_once() {
    let mut w = worker(10);
    let mut gates = Vec::new();
    for _ in 0..MAX_ABANDONED {
        let (release, gate) = mpsc::channel::<()>();
        gates.push(release);
        let _ = w.submit("hang", move |_| gate.recv().is_ok());
        hung_within(&w);
        w.abandon();
    }
    match answer(w.submit("one more", |_| 1), &w) {
        Poll::Lost(why) => assert!(why.contains("still waiting for libvirtd"), "{why}"),
        other => panic!("a job past MAX_ABANDONED ran: {other:?}"),
    }
    drop(gates);
    let until = Instant::now() + Duration::from_secs(5);
    while w.stuck.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(answer(w.submit("after", |_| 2), &w), Poll::Done(2));
}

#[test]
fn a_heartbeat_restarts_the_deadline_for_each_call_of_a_long_job() {
    // Five 300 ms calls: the job takes longer than the 1 s deadline, no call does.
    let mut w = worker(1000);
    let job = w.submit("many calls", |_| {
        for i in 0..5 {
            heartbeat(&format!("call {i}"));
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let until = Instant::now() + Duration::from_secs(5);
    let mut job = job;
    loop {
        assert!(w.hung().is_none(), "a 1.5 s job of 300 ms calls hung");
        match job.poll(&w) {
            Poll::Pending if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            Poll::Done(()) => break,
            other => panic!("{other:?}"),
        }
    }
    // Outside a worker a heartbeat does nothing.
    heartbeat("not a worker");
}
