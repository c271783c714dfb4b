import DTXHTTP
import DTXProtocol
import Foundation
import Logging
import Prometheus
import Synchronization

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

    /// An answer's status and body, as a single call or a batch item carries them. `error` is read only for an answer
    /// that is not a 200 (a success's body is not parsed a second time as an error).
    init(status: Int, decode: () throws -> BranchResponse, error: @autoclosure () -> ProtocolError?) {
        switch status {
        case 200:
            do {
                self = .done(try decode())
            } catch {
                self = .retry("the answer could not be read: \(error)")
            }
        case 400, 409: self = .refused(error() ?? ProtocolError(.init(rawValue: "http_\(status)"), "refused"))
        default: self = .retry(error().map { "\($0)" } ?? "HTTP \(status)")
        }
    }

    var label: String {
        switch self {
        case .done: "ok"
        case .refused: "refused"
        case .retry: "retry"
        }
    }
}

/// Second-phase calls to one participant for one operation, batched together.
struct BranchKey: Hashable, Sendable {
    var participant: String
    var base: String
    var op: BranchOperation
    /// TCC confirm that finalizes in the same statement (`?finalize=true`).
    var thenFinalize = false

    var url: String { base + op.path + (thenFinalize ? "?finalize=true" : "") }
}

typealias BranchBatcher = Batcher<BranchKey, BranchRequest, CallOutcome>

/// Calls participants' branch routes and retries them as the design says. Second-phase calls go through the
/// `Batcher` when batching is on.
struct BranchCaller: Sendable {
    let client: ServiceClient
    let participants: [String: String]
    let branchTimeout: Duration
    let policy: RetryPolicy
    /// This coordinator's URL, sent with every call (`dtx-coordinator`) so that participants know whom to ask.
    let advertisedURL: AdvertisedURL
    let batcher: BranchBatcher?
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    /// Batched second phases carry TCC's confirm and finalize of a branch in one call (`?finalize=true`): the
    /// participant runs the two steps, each with its barrier row, in one statement. The canonical protocol
    /// (`--batch-window 0`) sends them one by one.
    var mergesConfirmAndFinalize: Bool { batcher != nil }

    func call(
        _ op: BranchOperation, _ branch: BranchRecord, transaction: GlobalTransaction, timeout: Duration, thenFinalize: Bool = false
    ) async -> CallOutcome {
        guard let base = participants[branch.participant] else {
            return .refused(ProtocolError(.badRequest, "participant \(branch.participant) is not configured"))
        }
        let request = BranchRequest(
            workerEventId: transaction.id, productId: branch.productId, quantity: branch.quantity, notAfter: transaction.notAfter
        )
        let outcome: CallOutcome
        let key = BranchKey(participant: branch.participant, base: base, op: op, thenFinalize: thenFinalize)
        if let batcher, !op.isFirstPhase {
            outcome = await batcher.submit(key, request)
        } else {
            outcome = await single(key, request, timeout: timeout)
        }
        registry.counter("dtx_branch_calls_total", [("op", "\(op.mode.rawValue).\(op.rawValue)"), ("result", outcome.label)]).increment()
        return outcome
    }

    private func single(_ key: BranchKey, _ request: BranchRequest, timeout: Duration) async -> CallOutcome {
        do {
            let reply = try await client.post(key.url, json: request, headers: headers, timeout: timeout)
            return CallOutcome(status: reply.status, decode: { try reply.decode(BranchResponse.self) }, error: reply.error)
        } catch {
            return .retry("\(key.participant) not reachable: \(error)")
        }
    }

    var headers: [(String, String)] { [(CoordinatorHeader.name, advertisedURL.value)] }

    /// One HTTP request carrying many second-phase calls to one participant; one outcome per request, in order.
    func batch(_ key: BranchKey, _ requests: [BranchRequest]) async -> [CallOutcome] {
        registry.counter("dtx_branch_batches_total", [("op", "\(key.op.mode.rawValue).\(key.op.rawValue)")]).increment()
        do {
            let reply = try await client.post(key.url, json: requests, headers: headers, timeout: branchTimeout)
            guard reply.status == 200 else {
                let outcome = CallOutcome(status: reply.status >= 500 ? reply.status : 503, decode: { throw ProtocolError(.internalError, "") }, error: reply.error)
                return requests.map { _ in outcome }
            }
            let items = try reply.decode([BranchBatchItem].self)
            guard items.count == requests.count else {
                return requests.map { _ in .retry("\(key.participant) answered \(items.count) items for \(requests.count)") }
            }
            return zip(requests, items).map { request, item in
                // answers come in item order; one that names another branch is not taken for this one
                guard item.workerEventId == request.workerEventId && item.productId == request.productId else {
                    return .retry("\(key.participant) answered for another branch (\(item.workerEventId)/\(item.productId))")
                }
                return CallOutcome(status: item.httpStatus, decode: {
                    guard let result = item.result else { throw ProtocolError(.internalError, "a 200 item without a result") }
                    return result
                }, error: item.error)
            }
        } catch {
            return requests.map { _ in .retry("\(key.participant) not reachable: \(error)") }
        }
    }

    /// A first-phase call, retried while the transaction's deadline allows. Returns the last outcome.
    func callWithinDeadline(_ op: BranchOperation, _ branch: inout BranchRecord, transaction: GlobalTransaction) async -> CallOutcome {
        var attempt = 0
        while true {
            let left = transaction.firstPhaseEnds - .now
            guard left > .zero else { return .retry(branch.lastError ?? "out of time before the call") }
            branch.countAttempt()
            let outcome = await call(op, branch, transaction: transaction, timeout: min(branchTimeout, left))
            guard case .retry(let reason) = outcome else { return outcome }
            branch.lastError = BranchRecord.note("\(op.rawValue): \(reason)")
            let wait = policy.backoff(attempt: attempt)
            attempt += 1
            guard transaction.firstPhaseEnds - .now > wait else { return outcome }
            registry.counter("dtx_branch_retries_total", [("op", "\(op.mode.rawValue).\(op.rawValue)")]).increment()
            do {
                try await Task.sleep(for: wait)
            } catch {
                // cancelled (the coordinator is stopping): a sleep that returns at once would make this a busy loop of
                // calls until the deadline; the driver decides nothing for a cancelled task (recovery goes on later)
                return outcome
            }
        }
    }

    /// A second-phase call: retried until it succeeds, or until `until`, when the rest is left to the recovery
    /// loop (`Postponed`). A 409 here is not final: it is logged and retried like any failure.
    func callUntilDone(
        _ op: BranchOperation, _ branch: inout BranchRecord, transaction: GlobalTransaction, until: ContinuousClock.Instant, thenFinalize: Bool = false
    ) async throws -> BranchResponse {
        // a participant this coordinator was not started with (removed from --participant while transactions still
        // name it) cannot answer however often it is called: the transaction waits for an operator, not in a retry loop
        guard participants[branch.participant] != nil else { throw UnknownParticipant(name: branch.participant) }
        var attempt = 0
        while true {
            guard ContinuousClock.now < until else { throw Postponed() }
            branch.countAttempt()
            switch await call(op, branch, transaction: transaction, timeout: branchTimeout, thenFinalize: thenFinalize) {
            case .done(let response):
                return response
            case .refused(let error):
                branch.lastError = BranchRecord.note("\(op.rawValue): \(error)")
                logger.error("participant refused a second-phase call: retrying", metadata: [
                    "dtx.worker_event_id": "\(transaction.id)", "dtx.service": "\(branch.participant)", "dtx.error": "\(error)",
                ])
            case .retry(let reason):
                branch.lastError = BranchRecord.note("\(op.rawValue): \(reason)")
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

/// A second phase names a participant this coordinator has no URL for.
struct UnknownParticipant: Error {
    var name: String
    /// How long such a transaction is set aside before it is tried again (with the same flags, it fails again).
    static let setAside: Duration = .seconds(600)
}

/// The URL this coordinator tells participants to ask it at: given (`--advertise-url`), or made from the address it
/// serves on once it is bound (the port may be chosen by the system).
public final class AdvertisedURL: Sendable {
    private let url: Mutex<String>
    public init(_ url: String) { self.url = Mutex(url) }
    public var value: String { url.withLock { $0 } }
    func set(_ value: String) { url.withLock { $0 = value } }
}

extension BranchRecord {
    /// A branch's last error as the log keeps it: text from a participant, with no NUL (which jsonb refuses, and with
    /// it the whole log write of that batch, again at every retry) and at most 500 characters.
    static func note(_ text: String) -> String {
        let clean = text.replacingOccurrences(of: "\u{0}", with: "")
        return clean.count > 500 ? String(clean.prefix(500)) + "…" : clean
    }
}
