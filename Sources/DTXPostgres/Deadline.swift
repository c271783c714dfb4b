import NIOCore
import NIOPosix
import Synchronization

/// The operation did not finish within its time.
public struct DeadlineExceeded: Error, CustomStringConvertible, Sendable {
    public var limit: Duration
    public var description: String { "no answer within \(limit)" }
}

/// Returns `operation`'s result, or throws `DeadlineExceeded` once `limit` has passed.
///
/// The operation is cancelled at the deadline but not waited for: a PostgreSQL pool waiting for a server that is down
/// does not end on cancellation, and the caller must answer now. Callers use this only for work that is safe to let
/// finish late (reads, branch operations, which the barrier makes idempotent, and the coordinator's log writes, which
/// the lease epoch fences).
///
/// Every database call of the services goes through it, because PostgresNIO 1.33 can lose a call: a query written to
/// a pooled connection that closed a moment earlier (the server crashed or restarted) is dropped with its promise,
/// which then never completes (vapor/postgres-nio#487, whose fix was reverted in #501). Without a deadline such a call
/// hung its request, its recovery pass or its reconciler pass forever, and graceful shutdown waited for it. The timer is an event loop's
/// scheduled task, cancelled as soon as the operation ends: no sleeping task is left behind per call.
///
/// The caller's cancellation ends the wait too, at once, with a CancellationError (the operation is cancelled and not
/// waited for, as at the deadline): a service stopping must not wait out a long bound (retention's pass has 10
/// minutes), else ServiceLifecycle's cancellation limit ends the process with a trap.
public func withDeadline<T: Sendable>(_ limit: Duration, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let gate = ResumeOnce<T>()
    let work = WorkTask()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            gate.set(continuation)
            let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .nanoseconds(limit.components.seconds * 1_000_000_000 + limit.components.attoseconds / 1_000_000_000)) {
                // the answer first: the cancelled operation's own error (a CancellationError) must not take its place
                gate.resume(with: .failure(DeadlineExceeded(limit: limit)))
                work.cancel()
            }
            work.set(Task {
                do { gate.resume(with: .success(try await operation())) } catch { gate.resume(with: .failure(error)) }
                timer.cancel()
            })
        }
    } onCancel: {
        gate.resume(with: .failure(CancellationError()))
        work.cancel()
    }
}

/// The operation's task, cancelled by the deadline or by the caller's cancellation, whichever comes first; one that
/// comes before the task exists cancels it as soon as it is set.
private final class WorkTask: Sendable {
    private let state = Mutex<(task: Task<Void, Never>?, cancelled: Bool)>((nil, false))

    func set(_ task: Task<Void, Never>) {
        let cancelled = state.withLock { state in
            state.task = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    func cancel() {
        let task = state.withLock { state in
            state.cancelled = true
            return state.task
        }
        task?.cancel()
    }
}

/// Resumes a continuation once; later results are dropped.
private final class ResumeOnce<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, result: Result<T, any Error>?)>((nil, nil))

    func set(_ continuation: CheckedContinuation<T, any Error>) {
        let early = state.withLock { state -> Result<T, any Error>? in
            if let result = state.result { return result }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    func resume(with result: Result<T, any Error>) {
        let continuation = state.withLock { state -> CheckedContinuation<T, any Error>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
    }
}

/// Sleeps for `duration`; false when the task was cancelled instead (a service's loop then ends).
///
/// The services' loops end this way, normally, on a graceful shutdown: a loop that let the sleep's CancellationError
/// out would end its service with an error, and ServiceLifecycle then cancels the whole group and the process exits
/// with status 1 and "Error: CancellationError()" after a plain SIGTERM.
public func pause(for duration: Duration) async -> Bool {
    do {
        try await Task.sleep(for: duration)
        return !Task.isCancelled
    } catch {
        return false
    }
}
