import DTXHTTP
import DTXProtocol
import Foundation
import Logging
import Prometheus

/// The retry policy shared by the three modes: exponential backoff with jitter.
public struct RetryPolicy: Sendable {
    public var initial: Duration
    public var maximum: Duration

    /// The wait before retry number `attempt` (0-based): `initial * 2^attempt`, capped at `maximum`, then a random
    /// share from 50 % to 100 % of it, so that many retries spread out.
    public func backoff(attempt: Int) -> Duration {
        let base = initial.inSeconds * pow(2, Double(min(attempt, 30)))
        let capped = min(base, maximum.inSeconds)
        return .milliseconds(Int64(capped * Double.random(in: 0.5...1.0) * 1000))
    }
}

/// What one branch call came to.
enum CallOutcome: Sendable {
    case done(BranchResponse)
    /// A final business refusal (409) or malformed request (400).
    case refused(ProtocolError)
    /// 5xx, timeout, refused connection: try again.
    case retry(String)
}

/// Calls participants' branch routes and retries them as the design says.
struct BranchCaller: Sendable {
    let client: ServiceClient
    let participants: [String: String]
    let branchTimeout: Duration
    let policy: RetryPolicy
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    func call(_ op: BranchOperation, _ branch: BranchRecord, transaction id: Int64, timeout: Duration) async -> CallOutcome {
        guard let base = participants[branch.participant] else {
            return .refused(ProtocolError(.badRequest, "participant \(branch.participant) is not configured"))
        }
        let request = BranchRequest(workerEventId: id, productId: branch.productId, quantity: branch.quantity)
        let outcome: CallOutcome
        do {
            let reply = try await client.post(base + op.path, json: request, timeout: timeout)
            switch reply.status {
            case 200:
                outcome = .done(try reply.decode(BranchResponse.self))
            case 400, 409:
                outcome = .refused(reply.error ?? ProtocolError(.init(rawValue: "http_\(reply.status)"), "refused"))
            default:
                outcome = .retry(reply.error.map { "\($0)" } ?? "HTTP \(reply.status)")
            }
        } catch {
            outcome = .retry("\(branch.participant) not reachable: \(error)")
        }
        let label: String
        switch outcome {
        case .done: label = "ok"
        case .refused: label = "refused"
        case .retry: label = "retry"
        }
        registry.counter("dtx_branch_calls_total", [("op", "\(op.mode.rawValue).\(op.rawValue)"), ("result", label)]).increment()
        return outcome
    }

    /// A first-phase call, retried while the transaction's deadline allows. Returns the last outcome.
    func callWithinDeadline(_ op: BranchOperation, _ branch: inout BranchRecord, transaction id: Int64, deadline: Date) async -> CallOutcome {
        var attempt = 0
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return .retry(branch.lastError ?? "out of time before the call") }
            branch.attempts += 1
            let outcome = await call(op, branch, transaction: id, timeout: min(branchTimeout, .milliseconds(Int64(left * 1000))))
            guard case .retry(let reason) = outcome else { return outcome }
            branch.lastError = "\(op.rawValue): \(reason)"
            let wait = policy.backoff(attempt: attempt)
            attempt += 1
            guard deadline.timeIntervalSinceNow > wait.inSeconds else { return outcome }
            registry.counter("dtx_branch_retries_total", [("op", "\(op.mode.rawValue).\(op.rawValue)")]).increment()
            try? await Task.sleep(for: wait)
        }
    }

    /// A second-phase call: retried until it succeeds, or until `until`, when the rest is left to the recovery
    /// loop (`Postponed`). A 409 here is not final: it is logged and retried like any failure.
    func callUntilDone(_ op: BranchOperation, _ branch: inout BranchRecord, transaction id: Int64, until: ContinuousClock.Instant) async throws -> BranchResponse {
        var attempt = 0
        while true {
            branch.attempts += 1
            switch await call(op, branch, transaction: id, timeout: branchTimeout) {
            case .done(let response):
                return response
            case .refused(let error):
                branch.lastError = "\(op.rawValue): \(error)"
                logger.error("participant refused a second-phase call: retrying", metadata: [
                    "dtx.worker_event_id": "\(id)", "dtx.service": "\(branch.participant)", "dtx.error": "\(error)",
                ])
            case .retry(let reason):
                branch.lastError = "\(op.rawValue): \(reason)"
            }
            let wait = policy.backoff(attempt: attempt)
            attempt += 1
            guard ContinuousClock.now + wait < until else { throw Postponed() }
            registry.counter("dtx_branch_retries_total", [("op", "\(op.mode.rawValue).\(op.rawValue)")]).increment()
            try await Task.sleep(for: wait)
        }
    }
}

/// The second phase could not finish in the time given: the recovery loop goes on with it.
struct Postponed: Error {}
