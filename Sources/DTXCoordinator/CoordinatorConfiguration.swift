import DTXPostgres
import DTXProtocol
import Foundation

/// Everything a coordinator needs to run.
public struct CoordinatorConfiguration: Sendable {
    /// A participant the coordinator calls: its name (as in requests) and base URL.
    public struct Participant: Sendable, Hashable {
        public var name: String
        public var url: String
        public init(name: String, url: String) {
            self.name = name
            self.url = url.hasSuffix("/") ? String(url.dropLast()) : url
        }
    }

    /// Timeouts and retries (DESIGN section 4 defaults).
    public struct Timing: Sendable {
        /// One branch call's time limit.
        public var branchTimeout: Duration = .seconds(3)
        /// The first phase (try / reserve / prepare) is retried within this, counted from the start; then aborted.
        public var globalTimeout: Duration = .seconds(10)
        /// Backoff between retries: doubling from `initialBackoff` to `maxBackoff`, with jitter.
        public var initialBackoff: Duration = .milliseconds(100)
        public var maxBackoff: Duration = .seconds(10)
        /// How often the recovery loop looks for work.
        public var recoveryInterval: Duration = .seconds(1)
        /// How long a claim on a transaction lasts; renewed at every log write. Must exceed the global timeout
        /// plus one branch call, so that the driver's next write comes before the lease ends.
        public var leaseDuration: Duration = .seconds(20)
        /// How long `POST /v1/transactions` keeps driving the second phase before it answers 202 and leaves the rest
        /// to the recovery loop.
        public var responseWait: Duration = .seconds(10)
        /// One call to the log's database is given up after this (a lost call never ends otherwise, see
        /// `withDeadline`); the write then counts as failed, which the lease epoch makes safe.
        public var databaseTimeout: Duration = .seconds(10)
        public init() {}
    }

    public var host: String = "127.0.0.1"
    /// 0 picks a free port (tests).
    public var port: Int = 8090
    public var databaseURL: DatabaseURL
    /// In the order the short request form applies them (the documented ServiceA, then ServiceB).
    public var participants: [Participant]
    public var token: String?
    public var timing = Timing()
    /// This coordinator's name in the log's `lease_owner` column, for people (default host:port). Fencing does not use
    /// it: every process has its own holder number and every claim its own epoch.
    public var instanceID: String?
    /// The URL participants should ask this coordinator at (sent with every branch call). Default: the address it
    /// serves on (`http://HOST:PORT`; the machine's host name when it serves on every interface).
    public var advertiseURL: String?
    /// Batching of second-phase calls to one participant (see `Batcher`): a call waits at most this long for the
    /// request in flight before it goes in one of its own; zero turns batching off.
    public var batchWindow: Duration = .milliseconds(1)
    public var batchMaxItems: Int = 64
    public var maxDatabaseConnections: Int = 40
    /// XA: send the prepares to every participant at once rather than in order (see `XAMachine` for why the default
    /// is in order).
    public var xaConcurrentPrepare = false
    /// The status page at `GET /` (`--no-ui` turns it off).
    public var statusPage = true
    /// Pruning of transactions finished for longer than the horizon (see sql/coordinator/003).
    public var retention = Retention.Configuration()
    /// Transactions the recovery loop drives at once.
    public var recoveryBatch: Int = 32

    public init(databaseURL: DatabaseURL, participants: [Participant]) {
        self.databaseURL = databaseURL
        self.participants = participants
    }

    func validate() throws {
        guard !participants.isEmpty else { throw CoordinatorConfigurationError("give at least one --participant NAME=URL") }
        guard (0...65535).contains(port) else { throw CoordinatorConfigurationError("--port \(port) is not a TCP port: give 1 to 65535 (0 picks a free one)") }
        var names: Set<String> = []
        for participant in participants {
            guard names.insert(participant.name).inserted else {
                throw CoordinatorConfigurationError("participant '\(participant.name)' is given twice")
            }
            guard let url = URL(string: participant.url), url.scheme == "http" || url.scheme == "https", url.host != nil else {
                throw CoordinatorConfigurationError("participant '\(participant.name)' has URL '\(participant.url)': give http://HOST:PORT")
            }
        }
        // each would make the coordinator spin, abort everything or never finish a second phase
        let positive: [(String, Duration)] = [
            ("--branch-timeout", timing.branchTimeout), ("--global-timeout", timing.globalTimeout),
            ("--initial-backoff", timing.initialBackoff), ("--recovery-interval", timing.recoveryInterval),
            ("the database timeout", timing.databaseTimeout),
        ]
        for (name, value) in positive where value <= .zero {
            throw CoordinatorConfigurationError("\(name) must be above 0")
        }
        guard timing.maxBackoff >= timing.initialBackoff else {
            throw CoordinatorConfigurationError("--max-backoff (\(timing.maxBackoff)) must be at least --initial-backoff (\(timing.initialBackoff))")
        }
        guard maxDatabaseConnections >= 1 else { throw CoordinatorConfigurationError("--max-connections must be at least 1") }
        guard recoveryBatch >= 1 else { throw CoordinatorConfigurationError("the recovery batch must be at least 1") }
        // a driver calls no participant within one branch call of its lease's end (less its safety margin): with less
        // room than that, no second phase would ever make a call
        guard timing.leaseDuration - min(.seconds(2), timing.leaseDuration / 4) > timing.branchTimeout else {
            throw CoordinatorConfigurationError(
                "--lease (\(timing.leaseDuration)) must be longer than --branch-timeout (\(timing.branchTimeout)) plus a 2 s margin"
            )
        }
        guard timing.leaseDuration > timing.globalTimeout + timing.branchTimeout else {
            throw CoordinatorConfigurationError(
                "--lease (\(timing.leaseDuration)) must be longer than --global-timeout (\(timing.globalTimeout)) plus --branch-timeout "
                    + "(\(timing.branchTimeout)): raise --lease above \(timing.globalTimeout + timing.branchTimeout), or lower the others"
            )
        }
        guard timing.responseWait >= .zero, timing.responseWait < timing.leaseDuration else {
            throw CoordinatorConfigurationError("--response-wait must be from 0 to less than the lease")
        }
        guard (1...Limits.maxBatchItems).contains(batchMaxItems) else {
            throw CoordinatorConfigurationError("--batch-max must be from 1 to \(Limits.maxBatchItems)")
        }
        guard batchWindow >= .zero, batchWindow <= .seconds(1) else {
            throw CoordinatorConfigurationError("--batch-window must be from 0 (off) to 1 s")
        }
        if let advertiseURL, CoordinatorHeader.validated(advertiseURL) == nil {
            throw CoordinatorConfigurationError("--advertise-url '\(advertiseURL)' must be an http(s) URL such as http://coordinator.internal:8090")
        }
    }
}

public struct CoordinatorConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
