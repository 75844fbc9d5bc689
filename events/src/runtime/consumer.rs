//! The fetch loop and what happens to each message: bounded concurrency, heartbeats,
//! task bookkeeping, acks, naks with backoff, dead letters, cancellation and drain.
//!
//! Acking is the last step, after the outcome is recorded: a message whose outcome
//! could not be written to PostgreSQL is nak'd and comes back, never acked.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{field, Instrument};

use super::dead_letter::{self, Origin};
use super::retry::{self, Action};
use super::{
    Counters, EventContext, EventHandler, Failure, InFlight, JobHandler, Runtime, TaskContext,
};
use crate::config::ConsumerConfig;
use crate::envelope::Envelope;
use crate::jobs::tasks::{self, Begin};
use crate::jobs::TaskStatus;
use crate::kind::{Event, JobRef};
use crate::streams;
use crate::subject;

/// How long one pull request waits for messages. Short, so a pause or a shutdown is
/// noticed within about a second; an idle consumer costs one request per second.
const FETCH_EXPIRY: Duration = Duration::from_secs(1);
/// Wait after a failed fetch or consumer lookup (NATS down, stream missing) before the
/// next try, growing up to `MAX_ERROR_PAUSE`.
const ERROR_PAUSE: Duration = Duration::from_millis(500);
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(5);
/// After a task's token fires, how long its handler may run on to clean up (finish the
/// request in flight so a partial upload can be deleted) before its future is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// After the drain deadline cancelled the last handlers, how long their bookkeeping
/// (a database write, a nak) may take before the loop stops waiting.
const DRAIN_BOOKKEEPING: Duration = Duration::from_secs(5);

/// A durable consumer on the jobs stream and the settings it runs with.
#[derive(Debug, Clone)]
pub struct JobsConsumer {
    /// The worker kind whose tasks it delivers (pauses and the in-flight list use it).
    pub kind: String,
    /// Durable name.
    pub name: String,
    /// Subject filter: `subject::jobs_of_kind(kind)` or one destination's subject.
    pub filter_subject: String,
    pub config: ConsumerConfig,
}

/// What a fetch loop runs.
enum Work {
    Jobs {
        kind: String,
        handler: Arc<dyn JobHandler>,
    },
    Events {
        handler: Arc<dyn EventHandler>,
    },
}

/// One fetch loop: its consumer and what runs its messages.
struct Spec {
    stream: &'static str,
    consumer: String,
    filter: String,
    config: ConsumerConfig,
    work: Work,
}

/// What the message says about its own delivery.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    /// 1 on first delivery.
    count: u64,
    stream_sequence: u64,
}

/// How a supervised handler ended.
enum Outcome {
    Finished(Result<(), Failure>),
    /// Its token fired (a stop request or the drain deadline) before it finished.
    Stopped,
}

impl Runtime {
    /// Runs worker kind `kind`'s tasks until `shutdown` fires, then drains: no more
    /// fetches, running handlers get the drain timeout to finish, then are cancelled
    /// and their messages released for redelivery.
    pub async fn run_jobs(
        &self,
        kind: &str,
        handler: Arc<dyn JobHandler>,
        shutdown: CancellationToken,
    ) {
        let consumer = JobsConsumer {
            kind: kind.to_owned(),
            name: streams::jobs_consumer_name(kind),
            filter_subject: subject::jobs_of_kind(kind),
            config: self.inner.config.consumer(kind),
        };
        self.run_jobs_on(consumer, handler, shutdown).await;
    }

    /// Like [`Runtime::run_jobs`], on a consumer that takes only part of a kind's
    /// tasks (one destination's, say, with its own `max_ack_pending` as a global cap).
    /// The consumers of one kind must not overlap: the jobs stream is a work queue.
    pub async fn run_jobs_on(
        &self,
        consumer: JobsConsumer,
        handler: Arc<dyn JobHandler>,
        shutdown: CancellationToken,
    ) {
        // Know the paused queues before the first fetch, not one poll later.
        self.poll_pauses().await;
        let spec = Spec {
            stream: streams::JOBS_STREAM,
            consumer: consumer.name,
            filter: consumer.filter_subject,
            config: consumer.config,
            work: Work::Jobs {
                kind: consumer.kind,
                handler,
            },
        };
        self.run_loop(Arc::new(spec), shutdown).await;
    }

    /// Runs `handler` on the domain events matching `filter_subject` through durable
    /// consumer `consumer_name`, with the consumer settings of `kind_for_config`,
    /// until `shutdown` fires; drains like [`Runtime::run_jobs`].
    pub async fn run_events(
        &self,
        consumer_name: &str,
        filter_subject: &str,
        kind_for_config: &str,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) {
        let spec = Spec {
            stream: streams::EVENTS_STREAM,
            consumer: consumer_name.to_owned(),
            filter: filter_subject.to_owned(),
            config: self.inner.config.consumer(kind_for_config),
            work: Work::Events { handler },
        };
        self.run_loop(Arc::new(spec), shutdown).await;
    }

    async fn run_loop(&self, spec: Arc<Spec>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(spec.config.concurrency.max(1)));
        // Fired at the drain deadline: cancels every handler still running.
        let drain = CancellationToken::new();
        let mut running = JoinSet::new();
        let mut consumer: Option<jetstream::consumer::PullConsumer> = None;
        let mut errors: u32 = 0;
        let mut pauses = self.inner.pauses.subscribe();
        tracing::info!(consumer = %spec.consumer, filter = %spec.filter, "consumer loop started");

        while !shutdown.is_cancelled() {
            reap(&mut running);
            if errors > 0 {
                let pause = ERROR_PAUSE.saturating_mul(errors).min(MAX_ERROR_PAUSE);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => break,
                }
            }

            // Wait for a free slot, then take every free slot: fetch no more than can
            // start now, so nothing waits in this process while another is idle.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                _ = shutdown.cancelled() => break,
            };
            let Ok(first) = first else { break };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }

            if let Work::Jobs { kind, .. } = &spec.work {
                if pauses.borrow_and_update().contains(kind) {
                    drop(permits);
                    tracing::info!(kind = %kind, "queue paused; not fetching");
                    tokio::select! {
                        _ = pauses.changed() => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            }

            let current = match &consumer {
                Some(c) => c.clone(),
                None => match streams::ensure_consumer(
                    &self.inner.js,
                    spec.stream,
                    &spec.consumer,
                    &spec.filter,
                    &spec.config,
                )
                .await
                {
                    Ok(c) => {
                        consumer = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %spec.consumer, error = %e, "consumer not ready; retrying");
                        errors = errors.saturating_add(1);
                        continue;
                    }
                },
            };

            let batch = current
                .batch()
                .max_messages(permits.len())
                .expires(FETCH_EXPIRY)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(consumer = %spec.consumer, error = %e, "fetch failed; retrying");
                    // It may be gone (deleted, or NATS restarted without its store).
                    consumer = None;
                    errors = errors.saturating_add(1);
                    continue;
                }
            };
            errors = 0;
            // Read the batch to its end even during shutdown: messages already sent
            // to us are released at once rather than left to time out.
            while let Some(item) = batch.next().await {
                match item {
                    Ok(message) => {
                        let Some(permit) = permits.pop() else {
                            // The server never sends more than asked; if it did, the
                            // message goes back rather than exceed the concurrency.
                            settle(&message, AckKind::Nak(None)).await;
                            continue;
                        };
                        let job = self.clone().process(
                            spec.clone(),
                            message,
                            permit,
                            shutdown.clone(),
                            drain.clone(),
                        );
                        running.spawn(job);
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %spec.consumer, error = %e, "fetch ended with an error");
                        consumer = None;
                        errors = errors.saturating_add(1);
                        break;
                    }
                }
            }
        }

        self.drain(&spec, running, drain).await;
    }

    /// Lets running handlers finish up to the drain timeout, then cancels them and
    /// waits (briefly) for their messages to be released.
    async fn drain(&self, spec: &Spec, mut running: JoinSet<()>, drain: CancellationToken) {
        if !running.is_empty() {
            tracing::info!(consumer = %spec.consumer, running = running.len(), "draining");
        }
        let deadline = tokio::time::sleep(self.drain_timeout);
        let mut deadline = pin!(deadline);
        loop {
            tokio::select! {
                joined = running.join_next() => match joined {
                    Some(result) => log_join(result),
                    None => break,
                },
                _ = &mut deadline => {
                    tracing::warn!(
                        consumer = %spec.consumer,
                        running = running.len(),
                        "drain deadline passed; cancelling the handlers still running"
                    );
                    drain.cancel();
                    break;
                }
            }
        }
        let rest = async {
            while let Some(result) = running.join_next().await {
                log_join(result);
            }
        };
        if tokio::time::timeout(DRAIN_BOOKKEEPING, rest).await.is_err() {
            tracing::warn!(consumer = %spec.consumer, "handlers did not wind down; abandoning them");
            running.abort_all();
        }
        // Acks and naks are buffered by the client; send them before the process exits.
        if let Err(e) = self.inner.client.flush().await {
            tracing::warn!(error = %e, "could not flush acks to NATS; unacked messages will be redelivered");
        }
        tracing::info!(consumer = %spec.consumer, "consumer loop stopped");
    }

    /// One message, from parse to ack, in a span naming it.
    async fn process(
        self,
        spec: Arc<Spec>,
        message: jetstream::Message,
        _slot: OwnedSemaphorePermit,
        shutdown: CancellationToken,
        drain: CancellationToken,
    ) {
        let delivery = match message.info() {
            Ok(info) => Delivery {
                count: u64::try_from(info.delivered).unwrap_or(1).max(1),
                stream_sequence: info.stream_sequence,
            },
            // Every message a pull consumer hands out has JetStream metadata.
            Err(_) => Delivery {
                count: 1,
                stream_sequence: 0,
            },
        };
        let span = tracing::info_span!(
            "message",
            consumer = %spec.consumer,
            subject = %message.subject,
            stream_sequence = delivery.stream_sequence,
            delivery = delivery.count,
            task_id = field::Empty,
            execution_id = field::Empty,
        );
        async move {
            match &spec.work {
                Work::Jobs { kind, handler } => {
                    self.process_job(
                        &spec,
                        kind,
                        handler.as_ref(),
                        &message,
                        delivery,
                        &shutdown,
                        &drain,
                    )
                    .await
                }
                Work::Events { handler } => {
                    self.process_event(
                        &spec,
                        handler.as_ref(),
                        &message,
                        delivery,
                        &shutdown,
                        &drain,
                    )
                    .await
                }
            }
        }
        .instrument(span)
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn process_job(
        &self,
        spec: &Spec,
        kind: &str,
        handler: &dyn JobHandler,
        message: &jetstream::Message,
        delivery: Delivery,
        shutdown: &CancellationToken,
        drain: &CancellationToken,
    ) {
        let counters = &self.inner.counters;
        let job = match parse_job(&message.payload) {
            Ok(job) => job,
            Err(reason) => {
                Counters::bump(&counters.malformed);
                tracing::warn!(reason = %reason, "malformed task message");
                self.dead_letter(spec, message, delivery, &reason).await;
                return;
            }
        };
        let span = tracing::Span::current();
        span.record("task_id", job.task_id);
        span.record("execution_id", job.execution_id);

        if !self
            .hold_while_paused(kind, message, &spec.config, shutdown)
            .await
            || shutdown.is_cancelled()
        {
            // Not started, and this process is stopping: another one takes it now.
            settle(message, AckKind::Nak(None)).await;
            return;
        }

        let task = match tasks::begin(&self.inner.db, job.task_id, self.inner.worker_id).await {
            Ok(Begin::Run(task)) => task,
            Ok(Begin::Done(status)) => {
                Counters::bump(&counters.skipped);
                tracing::info!(
                    status = status.as_str(),
                    outcome = "skipped",
                    "task already final"
                );
                settle(message, AckKind::Ack).await;
                return;
            }
            Ok(Begin::Missing) => {
                Counters::bump(&counters.skipped);
                tracing::info!(outcome = "skipped", "task no longer exists");
                settle(message, AckKind::Ack).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start the task; retrying later");
                settle(message, nak_after(&spec.config, delivery)).await;
                return;
            }
        };

        let registration = self.inner.registry.register(
            InFlight {
                task_id: task.id,
                execution_id: task.execution_id,
                kind: kind.to_owned(),
                started_at: chrono::Utc::now(),
            },
            drain,
        );
        let ctx = TaskContext {
            task: *task,
            cancel: registration.cancel.clone(),
            db: self.inner.db.clone(),
            log: Mutex::new(String::new()),
            bytes: AtomicI64::new(0),
            outcome: Mutex::new(String::new()),
        };
        ctx.log(format!(
            "attempt {} started on worker {} (delivery {})",
            ctx.task.attempts, self.inner.worker_id, delivery.count
        ));
        tracing::info!(attempt = ctx.task.attempts, "task started");

        let run = AssertUnwindSafe(handler.run(&ctx))
            .catch_unwind()
            .map(|r| r.unwrap_or_else(|panic| Err(Failure::permanent(panic_reason(&panic)))));
        let outcome = self
            .supervise(run, message, &spec.config, &registration.cancel, Some(&ctx))
            .await;

        let id = ctx.task.id;
        let db = &self.inner.db;
        let attempt = ctx.task.attempts;
        match outcome {
            Outcome::Stopped if registration.requested() => {
                let bytes = self.end_attempt(&ctx, "stopped by request").await;
                match tasks::finish(db, id, TaskStatus::Cancelled, "stopped by request", bytes)
                    .await
                {
                    Ok(()) => {
                        Counters::bump(&counters.cancelled);
                        tracing::info!(outcome = "cancelled", "task stopped by request");
                        settle(message, AckKind::Ack).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record the cancellation; retrying later");
                        settle(message, nak_after(&spec.config, delivery)).await;
                    }
                }
            }
            Outcome::Stopped => {
                let bytes = self
                    .end_attempt(&ctx, "interrupted: the worker is shutting down")
                    .await;
                Counters::bump(&counters.interrupted);
                tracing::warn!(
                    outcome = "interrupted",
                    "task interrupted by shutdown; released for redelivery"
                );
                if let Err(e) =
                    tasks::retry_later(db, id, "interrupted: the worker shut down", bytes).await
                {
                    tracing::warn!(error = %e, "could not record the interruption");
                }
                settle(message, AckKind::Nak(None)).await;
            }
            Outcome::Finished(result) => {
                let permanent = matches!(result, Err(Failure::Permanent(_)));
                match retry::action_for(&result, delivery.count, &spec.config) {
                    Action::Ack => {
                        let bytes = self.end_attempt(&ctx, "succeeded").await;
                        let outcome = ctx.outcome.lock().map(|o| o.clone()).unwrap_or_default();
                        match tasks::finish(db, id, TaskStatus::Succeeded, &outcome, bytes).await {
                            Ok(()) => {
                                Counters::bump(&counters.handled_ok);
                                tracing::info!(outcome = "succeeded", "task succeeded");
                                settle(message, AckKind::Ack).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not record success; retrying later");
                                settle(message, nak_after(&spec.config, delivery)).await;
                            }
                        }
                    }
                    Action::Retry { delay, reason } => {
                        Counters::bump(&counters.failed_transient);
                        let text = format!(
                            "attempt {attempt} failed: {reason}; retrying in {}",
                            human(delay)
                        );
                        let bytes = self.end_attempt(&ctx, &text).await;
                        tracing::warn!(outcome = "retry", reason = %reason, delay_ms = delay.as_millis() as u64, "task failed; retrying");
                        if let Err(e) = tasks::retry_later(db, id, &text, bytes).await {
                            // The nak stands: the next delivery starts a new attempt
                            // whatever the row says.
                            tracing::warn!(error = %e, "could not record the failed attempt");
                        }
                        settle(message, AckKind::Nak(Some(delay))).await;
                    }
                    Action::GiveUp { reason } => {
                        if permanent {
                            Counters::bump(&counters.failed_permanent);
                        } else {
                            Counters::bump(&counters.failed_transient);
                        }
                        let bytes = self.end_attempt(&ctx, format!("failed: {reason}")).await;
                        tracing::warn!(outcome = "failed", reason = %reason, "task failed; dead-lettering");
                        // The copy first: a task marked failed whose message was lost
                        // would leave no trace in the dead letters.
                        if !self
                            .store_dead_letter(spec, message, delivery, &reason)
                            .await
                        {
                            let _ = tasks::retry_later(db, id, &reason, bytes).await;
                            settle(message, nak_after(&spec.config, delivery)).await;
                            return;
                        }
                        match tasks::finish(db, id, TaskStatus::Failed, &reason, bytes).await {
                            Ok(()) => settle(message, AckKind::Term).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "could not record the failure; retrying later");
                                settle(message, nak_after(&spec.config, delivery)).await;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn process_event(
        &self,
        spec: &Spec,
        handler: &dyn EventHandler,
        message: &jetstream::Message,
        delivery: Delivery,
        shutdown: &CancellationToken,
        drain: &CancellationToken,
    ) {
        let counters = &self.inner.counters;
        let (envelope, event) = match parse_event(&message.payload) {
            Ok(parsed) => parsed,
            Err(reason) => {
                Counters::bump(&counters.malformed);
                tracing::warn!(reason = %reason, "malformed event");
                self.dead_letter(spec, message, delivery, &reason).await;
                return;
            }
        };
        if shutdown.is_cancelled() {
            settle(message, AckKind::Nak(None)).await;
            return;
        }
        let ctx = EventContext {
            db: self.inner.db.clone(),
            source: self.inner.source.clone(),
            delivery: delivery.count,
        };
        let stop = drain.child_token();
        let run = AssertUnwindSafe(handler.handle(event, &envelope, &ctx))
            .catch_unwind()
            .map(|r| r.unwrap_or_else(|panic| Err(Failure::permanent(panic_reason(&panic)))));
        let outcome = self
            .supervise(run, message, &spec.config, &stop, None)
            .await;
        match outcome {
            Outcome::Stopped => {
                Counters::bump(&counters.interrupted);
                tracing::warn!(event_id = %envelope.id, outcome = "interrupted", "handler interrupted by shutdown");
                settle(message, AckKind::Nak(None)).await;
            }
            Outcome::Finished(result) => {
                let permanent = matches!(result, Err(Failure::Permanent(_)));
                match retry::action_for(&result, delivery.count, &spec.config) {
                    Action::Ack => {
                        Counters::bump(&counters.handled_ok);
                        tracing::debug!(event_id = %envelope.id, outcome = "handled", "event handled");
                        settle(message, AckKind::Ack).await;
                    }
                    Action::Retry { delay, reason } => {
                        Counters::bump(&counters.failed_transient);
                        tracing::warn!(event_id = %envelope.id, outcome = "retry", reason = %reason, delay_ms = delay.as_millis() as u64, "event handler failed; retrying");
                        settle(message, AckKind::Nak(Some(delay))).await;
                    }
                    Action::GiveUp { reason } => {
                        if permanent {
                            Counters::bump(&counters.failed_permanent);
                        } else {
                            Counters::bump(&counters.failed_transient);
                        }
                        tracing::warn!(event_id = %envelope.id, outcome = "failed", reason = %reason, "event handler failed; dead-lettering");
                        self.dead_letter(spec, message, delivery, &reason).await;
                    }
                }
            }
        }
    }

    /// Runs `run` while heartbeating `message` (and flushing the task's log), until it
    /// finishes or `cancel` fires; then it gets a short grace before being dropped.
    async fn supervise(
        &self,
        run: impl Future<Output = Result<(), Failure>>,
        message: &jetstream::Message,
        config: &ConsumerConfig,
        cancel: &CancellationToken,
        task: Option<&TaskContext>,
    ) -> Outcome {
        let mut run = pin!(run);
        let every = heartbeat_period(config);
        let heartbeat = async {
            let mut tick = interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                settle(message, AckKind::Progress).await;
                if let Some(ctx) = task {
                    self.flush_log(ctx).await;
                }
            }
        };
        let mut heartbeat = pin!(heartbeat);
        tokio::select! {
            biased;
            result = &mut run => {
                // A handler that saw the token and gave up did not fail: it was stopped.
                if result.is_err() && cancel.is_cancelled() {
                    return Outcome::Stopped;
                }
                return Outcome::Finished(result);
            }
            _ = cancel.cancelled() => {}
            _ = &mut heartbeat => {}
        }
        let grace = tokio::time::sleep(CANCEL_GRACE);
        tokio::select! {
            biased;
            result = &mut run => match result {
                // It finished its work after all; that is what happened.
                Ok(()) => Outcome::Finished(Ok(())),
                Err(_) => Outcome::Stopped,
            },
            _ = grace => Outcome::Stopped,
            _ = &mut heartbeat => Outcome::Stopped,
        }
    }

    /// Holds a task message of a paused kind (keeping it with in-progress acks, which
    /// costs no delivery) until the kind resumes. `false`: shutdown came first.
    async fn hold_while_paused(
        &self,
        kind: &str,
        message: &jetstream::Message,
        config: &ConsumerConfig,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut pauses = self.inner.pauses.subscribe();
        if !pauses.borrow_and_update().contains(kind) {
            return true;
        }
        tracing::info!("queue paused; holding the task until it resumes");
        let every = heartbeat_period(config);
        let mut tick = interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = pauses.changed() => {
                    if changed.is_err() || !pauses.borrow_and_update().contains(kind) {
                        return true;
                    }
                }
                _ = tick.tick() => settle(message, AckKind::Progress).await,
                _ = shutdown.cancelled() => return false,
            }
        }
    }

    /// Copies `message` to the dead letters and terminates it; if the copy fails, naks
    /// it instead, so it comes back rather than vanish.
    async fn dead_letter(
        &self,
        spec: &Spec,
        message: &jetstream::Message,
        delivery: Delivery,
        reason: &str,
    ) {
        if self
            .store_dead_letter(spec, message, delivery, reason)
            .await
        {
            settle(message, AckKind::Term).await;
        } else {
            settle(message, nak_after(&spec.config, delivery)).await;
        }
    }

    /// Copies `message` to the dead letters. `false`: the copy failed (the caller naks
    /// so the message comes back rather than vanish).
    async fn store_dead_letter(
        &self,
        spec: &Spec,
        message: &jetstream::Message,
        delivery: Delivery,
        reason: &str,
    ) -> bool {
        let origin = Origin {
            stream: spec.stream,
            consumer: &spec.consumer,
            subject: message.subject.as_str(),
            stream_sequence: delivery.stream_sequence,
            deliveries: delivery.count,
        };
        match dead_letter::publish(&self.inner.js, &origin, reason, message.payload.clone()).await {
            Ok(()) => {
                Counters::bump(&self.inner.counters.dead_lettered);
                tracing::warn!(reason = %reason, "message dead-lettered");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter the message; it will come back");
                false
            }
        }
    }

    /// Ends the record of an attempt: logs `line`, writes the buffered log, and takes
    /// the bytes counted since the last record, for the task row.
    async fn end_attempt(&self, ctx: &TaskContext, line: impl AsRef<str>) -> i64 {
        ctx.log(line);
        self.flush_log(ctx).await;
        ctx.bytes.swap(0, Ordering::Relaxed)
    }

    /// Writes the task's buffered log lines. On failure they stay buffered (bounded)
    /// for the next flush.
    async fn flush_log(&self, ctx: &TaskContext) {
        let text = match ctx.log.lock() {
            Ok(mut log) => std::mem::take(&mut *log),
            Err(_) => return,
        };
        if text.is_empty() {
            return;
        }
        if let Err(e) = tasks::append_log(&self.inner.db, ctx.task.id, &text).await {
            tracing::warn!(error = %e, "could not write the task log; keeping it for the next flush");
            if let Ok(mut log) = ctx.log.lock() {
                log.insert_str(0, &text);
                keep_tail(
                    &mut log,
                    usize::try_from(tasks::LOG_MAX_BYTES).unwrap_or(usize::MAX),
                );
            }
        }
    }
}

/// Sends an ack of `kind`. A lost ack is not an error to act on: the server redelivers
/// after `ack_wait`, and task bookkeeping makes the redelivery harmless.
async fn settle(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, ack = ?kind, "ack not sent; the message will be redelivered");
    }
}

/// A nak delayed like a transient failure of this delivery (for bookkeeping errors).
fn nak_after(config: &ConsumerConfig, delivery: Delivery) -> AckKind {
    AckKind::Nak(Some(retry::retry_delay(config, delivery.count)))
}

/// In-progress acks every third of `ack_wait`: two may be lost before the server
/// redelivers a message whose handler is still running.
fn heartbeat_period(config: &ConsumerConfig) -> Duration {
    (config.ack_wait() / 3).max(Duration::from_millis(100))
}

/// The task a job message names; anything else is a reason to dead-letter it.
fn parse_job(payload: &[u8]) -> Result<JobRef, String> {
    let envelope = Envelope::parse(payload).map_err(|e| e.to_string())?;
    match envelope.event().map_err(|e| e.to_string())? {
        Event::JobRequested { job } => Ok(job),
        other => Err(format!(
            "not a job request on the jobs stream: {}",
            other.type_name()
        )),
    }
}

fn parse_event(payload: &[u8]) -> Result<(Envelope, Event), String> {
    let envelope = Envelope::parse(payload).map_err(|e| e.to_string())?;
    let event = envelope.event().map_err(|e| e.to_string())?;
    Ok((envelope, event))
}

fn panic_reason(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("handler panicked: {text}")
}

/// Removes finished handler tasks from the set (so it does not grow), logging panics
/// that escaped the handler's own guard.
fn reap(running: &mut JoinSet<()>) {
    while let Some(result) = running.try_join_next() {
        log_join(result);
    }
}

fn log_join(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result {
        if e.is_panic() {
            tracing::error!(error = %e, "message task panicked; its message will be redelivered");
        }
    }
}

/// Drops the oldest bytes of `log` beyond `max`, at a character boundary.
fn keep_tail(log: &mut String, max: usize) {
    if log.len() <= max {
        return;
    }
    let mut cut = log.len() - max;
    while !log.is_char_boundary(cut) {
        cut += 1;
    }
    log.drain(..cut);
}

/// `1.5s`, `250ms`: for task logs people read.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::ArtifactRef;

    #[test]
    fn job_messages_parse_and_everything_else_is_malformed() {
        let job = JobRef {
            execution_id: 1,
            task_id: 2,
            kind: "echo".into(),
            destination: "default".into(),
        };
        let envelope = Envelope::new(&Event::JobRequested { job: job.clone() }, "/t");
        let bytes = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(parse_job(&bytes).unwrap(), job);
        assert!(parse_job(b"{not json").is_err());
        let pushed = Envelope::new(
            &Event::ArtifactDeleted {
                artifact: ArtifactRef {
                    project: "p".into(),
                    repository: "p/r".into(),
                    digest: "sha256:1".into(),
                },
                actor: "a".into(),
            },
            "/t",
        );
        let err = parse_job(&serde_json::to_vec(&pushed).unwrap()).unwrap_err();
        assert!(err.contains("not a job request"), "{err}");
        assert!(parse_event(&serde_json::to_vec(&pushed).unwrap()).is_ok());
        let mut unknown = serde_json::to_value(&pushed).unwrap();
        unknown["type"] = "io.berth.nothing.v1".into();
        assert!(parse_event(&serde_json::to_vec(&unknown).unwrap()).is_err());
    }

    #[test]
    fn heartbeats_come_three_times_per_ack_wait() {
        let config = ConsumerConfig {
            ack_wait_secs: 30,
            ..ConsumerConfig::default()
        };
        assert_eq!(heartbeat_period(&config), Duration::from_secs(10));
        let config = ConsumerConfig {
            ack_wait_secs: 0,
            ..ConsumerConfig::default()
        };
        assert!(heartbeat_period(&config) >= Duration::from_millis(100));
    }

    #[test]
    fn kept_logs_lose_their_oldest_bytes_first() {
        let mut log = "ééé-abc".to_owned();
        keep_tail(&mut log, 4);
        assert_eq!(log, "-abc");
        let mut log = "ééé".to_owned();
        keep_tail(&mut log, 3);
        assert_eq!(log, "é");
    }

    #[test]
    fn panics_become_reasons() {
        let panic: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_reason(&panic), "handler panicked: boom");
        let panic: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_reason(&panic), "handler panicked: bang");
    }
}
