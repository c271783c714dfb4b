import DTXHTTP
import DTXPostgres
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// ServiceA, ServiceB and a coordinator as separate `dtx` processes: what the demo and the benchmark run.
public actor Stack {
    public struct Configuration: Sendable {
        /// The `dtx` executable to start.
        public var executable: String
        /// Where the logs go.
        public var logDirectory: String
        public var serviceA: DatabaseURL
        public var serviceB: DatabaseURL
        public var coordinatorDatabase: DatabaseURL
        public var token: String?
        /// Extra arguments for each participant, by name (fault injection, reconcile interval).
        public var participantArguments: [String: [String]] = [:]
        public var coordinatorArguments: [String] = []
        public var logLevel = "warning"
        /// Start the services without tying them to this process (they outlive it).
        public var keepRunning = false

        public init(executable: String, logDirectory: String, serviceA: DatabaseURL, serviceB: DatabaseURL, coordinatorDatabase: DatabaseURL) {
            self.executable = executable
            self.logDirectory = logDirectory
            self.serviceA = serviceA
            self.serviceB = serviceB
            self.coordinatorDatabase = coordinatorDatabase
        }
    }

    public let configuration: Configuration
    public private(set) var ports: [String: Int] = [:]
    public private(set) var processes: [String: ChildProcess] = [:] {
        didSet { pids.withLock { $0 = processes.values.map(\.pid) } }
    }
    /// The pids, readable without the actor (from a signal handler).
    private let pids = Mutex<[pid_t]>([])

    /// SIGTERM to every service, now, without waiting: for a Ctrl-C handler.
    public nonisolated func terminateNow() {
        for pid in pids.withLock({ $0 }) { Glibc.kill(pid, SIGTERM) }
    }
    let client: ServiceClient

    public static let participantNames = ["ServiceA", "ServiceB"]
    public static let coordinatorName = "coordinator"

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.client = ServiceClient(configuration: .init(token: configuration.token))
    }

    public func url(_ name: String) -> String { "http://127.0.0.1:\(ports[name] ?? 0)" }
    public var coordinatorURL: String { url(Self.coordinatorName) }

    /// Starts the three services (free ports) and waits until each answers /health.
    public func start() async throws {
        try FileManager.default.createDirectory(atPath: configuration.logDirectory, withIntermediateDirectories: true)
        for name in Self.participantNames + [Self.coordinatorName] where ports[name] == nil {
            ports[name] = try EmbeddedPostgres.freePort()
        }
        for name in Self.participantNames { try await startService(name) }
        try await startService(Self.coordinatorName)
    }

    /// Starts one service (again) on its port, and waits for its /health.
    public func startService(_ name: String) async throws {
        var arguments: [String]
        let parent = (configuration.keepRunning ? [] : ["--parent-pid", "\(getpid())"]) + ["--log-level", configuration.logLevel]
        if name == Self.coordinatorName {
            arguments = ["coordinator", "--port", "\(ports[name]!)", "--database-url", configuration.coordinatorDatabase.urlString,
                         "--instance-id", "coordinator-1"]
            for participant in Self.participantNames { arguments += ["--participant", "\(participant)=\(url(participant))"] }
            arguments += configuration.coordinatorArguments
        } else {
            let database = name == "ServiceA" ? configuration.serviceA : configuration.serviceB
            arguments = ["participant", "--name", name, "--port", "\(ports[name]!)", "--database-url", database.urlString,
                         "--coordinator", url(Self.coordinatorName)]
            arguments += configuration.participantArguments[name] ?? []
        }
        if let token = configuration.token { arguments += ["--token", token] }
        let process = try ChildProcess.spawn(
            name: name, executable: configuration.executable, arguments: arguments + parent,
            logPath: "\(configuration.logDirectory)/\(name).log"
        )
        processes[name] = process
        try await waitHealthy(process, url: url(name))
    }

    private func waitHealthy(_ process: ChildProcess, url: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let status = process.exitStatus() {
                throw LaunchError("\(process.name) exited with status \(status) at start; its log (\(process.logPath)) ends:\n\(process.logTail())")
            }
            if let reply = try? await client.get(url + "/health", timeout: .seconds(2)), reply.status == 200 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw LaunchError("\(process.name) did not answer /health within 60 s; its log: \(process.logPath)")
    }

    /// SIGKILL, as a crash.
    public func kill(_ name: String) async {
        await processes[name]?.kill9()
    }

    /// Graceful stop of everything (SIGTERM, then SIGKILL after a grace period).
    public func stop() async {
        await withTaskGroup(of: Void.self) { group in
            for process in processes.values { group.addTask { await process.stop() } }
        }
        try? await client.shutdown()
    }

    /// CPU seconds used so far, by service name.
    public func cpuSeconds() -> [String: Double] {
        processes.compactMapValues { $0.cpuSeconds() }
    }
}
