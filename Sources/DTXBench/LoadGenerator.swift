import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Histogram
import Logging
import PostgresNIO
import Synchronization

/// What the load calls: the coordinator in one mode, or a baseline.
public enum LoadTarget: Sendable {
    /// Both decrements in one local transaction in ServiceA's database (the mirror product stands in for ServiceB's):
    /// the floor no distributed protocol can beat.
    case local(PostgresClient)
    /// The client reserves at both participants itself (`/saga/reserve`, concurrently): no coordinator, no atomicity.
    case direct(serviceA: String, serviceB: String)
    /// `POST /v1/transactions` on the coordinator.
    case coordinator(url: String, mode: Mode)

    public var name: String {
        switch self {
        case .local: "local"
        case .direct: "direct"
        case .coordinator(_, let mode): mode.rawValue
        }
    }
}

/// How much load, and for how long.
public struct LoadPlan: Sendable {
    public var clients: Int = 4
    /// Measured time (after the warm-up).
    public var duration: Duration = .seconds(10)
    /// When set, stop after this many measured transactions instead of at `duration`.
    public var count: Int?
    public var warmup: Duration = .seconds(2)
    /// Open loop at this many requests per second (latency from the intended send time); nil: closed loop.
    public var rate: Double?
    /// Width of the throughput samples (for recovery timelines).
    public var sampleInterval: Duration = .milliseconds(500)
    public var requestTimeout: Duration = .seconds(30)

    public init() {}
}

/// What one load run measured.
public struct LoadResult: Sendable {
    public var measuredSeconds: Double
    public var latency: Histogram<UInt64>
    public var outcomes: Outcomes
    /// Completed transactions per `sampleInterval`, from the start of the run (warm-up included).
    public var samples: [Int]
    public var sampleSeconds: Double

    public var transactions: Int { outcomes.total }
    public var throughput: Double { measuredSeconds > 0 ? Double(outcomes.completed + outcomes.failed + outcomes.compensated) / measuredSeconds : 0 }

    /// Percentiles in milliseconds (the histogram records microseconds).
    public var percentiles: Percentiles {
        func ms(_ p: Double) -> Double { Double(latency.valueAtPercentile(p)) / 1000 }
        guard latency.totalCount > 0 else { return Percentiles(p50: 0, p90: 0, p99: 0, p999: 0, max: 0) }
        return Percentiles(p50: ms(50), p90: ms(90), p99: ms(99), p999: ms(99.9), max: Double(latency.maxRecorded) / 1000)
    }
}

/// Drives a `LoadTarget` with the workload: closed loop by default, open loop at a fixed rate on request.
public struct LoadGenerator: Sendable {
    public let client: ServiceClient
    public let workload: Workload
    /// Called about every half second with the transactions answered so far (progress display).
    public var progress: (@Sendable (Int) -> Void)?

    public init(client: ServiceClient, workload: Workload, progress: (@Sendable (Int) -> Void)? = nil) {
        self.client = client
        self.workload = workload
        self.progress = progress
    }

    /// Ids for the baselines' rows, above `Verifier.baselineIDs`; unique across runs of one process.
    static let baselineIDs = BaselineIDs()

    final class BaselineIDs: Sendable {
        private let next = Atomic<Int64>(Verifier.baselineIDs + Int64(Date().timeIntervalSince1970 * 1000) * 1000)
        func take() -> Int64 { next.add(1, ordering: .relaxed).oldValue }
    }

    enum Answer { case completed, failed, compensated, pending, error }

    /// Open loop: when arrival `index` is due (`rate` is checked by the command: finite, above 0).
    static func arrival(_ index: Int, rate: Double, from start: ContinuousClock.Instant) -> ContinuousClock.Instant {
        start + .nanoseconds(Int64(Double(index) / rate * 1e9))
    }

    public func run(_ target: LoadTarget, plan: LoadPlan) async -> LoadResult {
        let sampler = workload.sampler()
        let start = ContinuousClock.now
        let measureFrom = start + plan.warmup
        let measureUntil = measureFrom + plan.duration
        let counters = Counters()
        let sampleNanos = Double(plan.sampleInterval.components.seconds) * 1e9 + Double(plan.sampleInterval.components.attoseconds) / 1e9

        let progressTask = progress.map { report in
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(500))
                    report(counters.answered.load(ordering: .relaxed))
                }
            }
        }
        defer { progressTask?.cancel() }

        let perClient = await withTaskGroup(of: (Histogram<UInt64>, Outcomes, [Int]).self) { group in
            for _ in 0..<plan.clients {
                group.addTask {
                    var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
                    var outcomes = Outcomes()
                    var samples: [Int] = []
                    while true {
                        var sendAt = ContinuousClock.now
                        if let rate = plan.rate {
                            let index = counters.arrivals.add(1, ordering: .relaxed).oldValue
                            sendAt = Self.arrival(index, rate: rate, from: start)
                            if sendAt >= measureUntil { break }
                            if sendAt > .now {
                                try? await Task.sleep(until: sendAt)
                            } else if ContinuousClock.now >= measureUntil {
                                // due in the window, not sent by its end (every client busy): the run does not go on
                                // to send the backlog; it counts as an error, its latency at least its wait so far
                                if sendAt >= measureFrom {
                                    outcomes.errors += 1
                                    _ = histogram.record(UInt64(max(1, (ContinuousClock.now - sendAt).inMicroseconds)))
                                }
                                break
                            }
                        } else if sendAt >= measureUntil {
                            break
                        }
                        if let count = plan.count, counters.started.add(1, ordering: .relaxed).oldValue >= count { break }
                        let answer = await self.send(target, product: sampler.next(), timeout: plan.requestTimeout)
                        let end = ContinuousClock.now
                        counters.answered.add(1, ordering: .relaxed)
                        if answer == .completed {
                            let bucket = Int(Double((end - start).components.seconds) * 1e9 / sampleNanos
                                + Double((end - start).components.attoseconds) / 1e9 / sampleNanos)
                            if samples.count <= bucket { samples += Array(repeating: 0, count: bucket - samples.count + 1) }
                            samples[bucket] += 1
                        }
                        // closed loop: what was answered within the window. Open loop: every arrival due in the
                        // window, however late its answer, so that a stall near the end still shows in the latency
                        guard sendAt >= measureFrom, end <= measureUntil || plan.count != nil || plan.rate != nil else { continue }
                        counters.measured.add(1, ordering: .relaxed)
                        // latency is of answers: an error (a refused connection while a process is down) comes back at
                        // once and would pull the percentiles below any real answer's; errors are counted apart
                        if answer != .error { _ = histogram.record(UInt64(max(1, (end - sendAt).inMicroseconds))) }
                        switch answer {
                        case .completed: outcomes.completed += 1
                        case .failed: outcomes.failed += 1
                        case .compensated: outcomes.compensated += 1
                        case .pending: outcomes.pending += 1
                        case .error: outcomes.errors += 1
                        }
                    }
                    return (histogram, outcomes, samples)
                }
            }
            return await group.reduce(into: [(Histogram<UInt64>, Outcomes, [Int])]()) { $0.append($1) }
        }
        let finished = ContinuousClock.now
        var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var outcomes = Outcomes()
        if let rate = plan.rate, plan.count == nil {
            // arrivals due in the window that no client took before it ended: never sent, errors as above
            var index = counters.arrivals.load(ordering: .relaxed)
            while true {
                let sendAt = Self.arrival(index, rate: rate, from: start)
                guard sendAt < measureUntil else { break }
                if sendAt >= measureFrom {
                    outcomes.errors += 1
                    _ = latency.record(UInt64(max(1, (finished - sendAt).inMicroseconds)))
                }
                index += 1
            }
        }
        var samples: [Int] = []
        for (histogram, clientOutcomes, clientSamples) in perClient {
            latency.add(histogram)
            outcomes.completed += clientOutcomes.completed
            outcomes.failed += clientOutcomes.failed
            outcomes.compensated += clientOutcomes.compensated
            outcomes.pending += clientOutcomes.pending
            outcomes.errors += clientOutcomes.errors
            if samples.count < clientSamples.count { samples += Array(repeating: 0, count: clientSamples.count - samples.count) }
            for (index, value) in clientSamples.enumerated() { samples[index] += value }
        }
        let measuredEnd = plan.count != nil ? finished : min(finished, measureUntil)
        let measured = measuredEnd - measureFrom
        return LoadResult(
            measuredSeconds: max(0, measured.inSeconds),
            latency: latency, outcomes: outcomes, samples: samples, sampleSeconds: sampleNanos / 1e9
        )
    }

    func send(_ target: LoadTarget, product: Int64, timeout: Duration) async -> Answer {
        let quantity = workload.quantity
        switch target {
        case .coordinator(let url, let mode):
            guard let reply = try? await client.post(url + "/v1/transactions", json: TransactionRequest(mode: mode, productId: product, quantity: quantity), timeout: timeout) else {
                return .error
            }
            switch reply.status {
            case 200: return .completed
            case 202: return .pending
            case 409: return (try? reply.decode(TransactionView.self).status) == .compensated ? .compensated : .failed
            default: return .error
            }
        case .direct(let serviceA, let serviceB):
            let id = Self.baselineIDs.take()
            let request = BranchRequest(workerEventId: id, productId: product, quantity: quantity)
            async let a = try? client.post(serviceA + "/saga/reserve", json: request, timeout: timeout)
            async let b = try? client.post(serviceB + "/saga/reserve", json: request, timeout: timeout)
            let (x, y) = await (a, b)
            guard let x, let y else { return .error }
            if x.status == 200 && y.status == 200 { return .completed }
            if x.status == 409 || y.status == 409 { return .failed }
            return .error
        case .local(let postgres):
            let id = Self.baselineIDs.take()
            let mirror = product + Workload.mirrorOffset
            do {
                try await postgres.transaction(logger: Self.silent) { connection in
                    for (productId, service) in [(product, "ServiceA"), (mirror, "ServiceB")] {
                        let taken = try await connection.query(
                            "UPDATE products SET stock = stock - \(quantity) WHERE id = \(productId) AND stock >= \(quantity) RETURNING 1",
                            logger: Self.silent
                        ).count()
                        guard taken == 1 else { throw ProtocolError(.insufficientStock, "local") }
                        try await connection.query(
                            """
                            INSERT INTO transactions (service, product_id, quantity, status, worker_event_id, mode)
                            VALUES (\(service), \(productId), \(quantity), 'confirm', \(id), 'saga')
                            """,
                            logger: Self.silent
                        )
                    }
                }
                return .completed
            } catch is ProtocolError {
                return .failed
            } catch {
                return .error
            }
        }
    }

    /// Shared by the clients of one run.
    final class Counters: Sendable {
        let measured = Atomic<Int>(0)
        let answered = Atomic<Int>(0)
        let arrivals = Atomic<Int>(0)
        let started = Atomic<Int>(0)
    }

    static let silent = Logger(label: "dtx.bench.silent", factory: { _ in SwiftLogNoOpLogHandler() })
}
