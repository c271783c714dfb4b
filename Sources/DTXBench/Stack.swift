import DTXHTTP
import DTXPostgres
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// ServiceA, ServiceB and the coordinator as separate `dtx` processes, what the demo and the benchmark run; for the
/// benchmark also a second coordinator with batching off (the canonical protocol) and, when a round-trip time is
/// given, a `dtx relay` process that every connection between two parts goes through.
///
/// With a relay, each part reaches the next through its own link, so that the round trip between any two parts is
/// the relay's RTT: load generator -> each coordinator and each participant (the baselines), coordinators -> each
/// participant, participants -> the coordinator (their reconcilers), each service -> its PostgreSQL server.
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
        /// Also run a coordinator with batching off (`coordinator-unbatched`), for the canonical protocol's rows.
        public var unbatchedCoordinator = false
        /// The batched coordinator's `--batch-window` (nil: its default).
        public var batchWindow: Duration?
        /// Put every connection between two parts through a relay with this round-trip time (nil: no relay). Zero
        /// starts a relay that adds no delay, for partitions.
        public var rtt: Duration?

        public init(executable: String, logDirectory: String, serviceA: DatabaseURL, serviceB: DatabaseURL, coordinatorDatabase: DatabaseURL) {
            self.executable = executable
            self.logDirectory = logDirectory
            self.serviceA = serviceA
            self.serviceB = serviceB
            self.coordinatorDatabase = coordinatorDatabase
        }
    }

    public static let participantNames = ["ServiceA", "ServiceB"]
    public static let coordinatorName = "coordinator"
    public static let unbatchedCoordinatorName = "coordinator-unbatched"
    public static let relayName = "relay"

    /// The relay's links, named `<from>-<to>`.
    public enum Link {
        public static func database(_ service: String) -> String { "\(service)-db" }
        public static func coordinatorTo(_ participant: String) -> String { "coordinator-\(participant)" }
        public static let toCoordinator = "participants-coordinator"
        public static func loadgenTo(_ service: String) -> String { "loadgen-\(service)" }
        public static let loadgenDatabase = "loadgen-db"
    }

    public let configuration: Configuration
    /// The port each service listens on.
    public private(set) var ports: [String: Int] = [:]
    /// The port each relay link listens on (empty without a relay).
    public private(set) var relayPorts: [String: Int] = [:]
    public private(set) var processes: [String: ChildProcess] = [:] {
        didSet { pids.withLock { $0 = processes.values.map(\.pid) } }
    }
    /// The pids, readable without the actor (from a signal handler).
    private let pids = Mutex<[pid_t]>([])
    let client: ServiceClient

    /// SIGTERM to every process, now, without waiting: for a Ctrl-C handler.
    public nonisolated func terminateNow() {
        for pid in pids.withLock({ $0 }) { Glibc.kill(pid, SIGTERM) }
    }

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.client = ServiceClient(configuration: .init(token: configuration.token))
    }

    public var serviceNames: [String] {
        Self.participantNames + [Self.coordinatorName] + (configuration.unbatchedCoordinator ? [Self.unbatchedCoordinatorName] : [])
    }

    public var hasRelay: Bool { configuration.rtt != nil }

    /// A service's own URL (for health checks and tools; never through the relay).
    public func url(_ name: String) -> String { "http://127.0.0.1:\(ports[name] ?? 0)" }
    public var coordinatorURL: String { url(Self.coordinatorName) }

    /// The URL the load generator uses for a service: through the relay when there is one.
    public func loadURL(_ name: String) -> String {
        relayPorts[Link.loadgenTo(name)].map { "http://127.0.0.1:\($0)" } ?? url(name)
    }

    /// ServiceA's database as the load generator reaches it (the `local` baseline and pgbench).
    public func loadDatabase() -> DatabaseURL {
        relayPorts[Link.loadgenDatabase].map { configuration.serviceA.through(port: $0) } ?? configuration.serviceA
    }

    /// Starts the relay (if any) and the services (free ports), and waits until each answers /health. When one does
    /// not start, what did start is stopped before the error is thrown.
    public func start() async throws {
        do {
            try FileManager.default.createDirectory(atPath: configuration.logDirectory, withIntermediateDirectories: true)
            for name in serviceNames where ports[name] == nil { ports[name] = try EmbeddedPostgres.freePort() }
            if let rtt = configuration.rtt { try await startRelay(rtt) }
            for name in Self.participantNames { try await startService(name) }
            try await startService(Self.coordinatorName)
            if configuration.unbatchedCoordinator { try await startService(Self.unbatchedCoordinatorName) }
        } catch {
            await stop()
            throw error
        }
    }

    /// Each link's name and the host and port it forwards to: the database servers where their URLs say (another
    /// machine too), the services on this one.
    private func relayLinks() throws -> [(name: String, host: String, port: Int)] {
        func target(_ url: DatabaseURL) throws -> (String, Int) {
            guard case .tcp(let host, let port) = url.endpoint else { throw LaunchError("the relay needs TCP database URLs, not \(url)") }
            return (host, port)
        }
        func local(_ service: String) throws -> (String, Int) {
            guard let port = ports[service] else { throw LaunchError("no service named '\(service)' in this stack") }
            return ("127.0.0.1", port)
        }
        var links: [(String, (String, Int))] = [
            (Link.database("ServiceA"), try target(configuration.serviceA)),
            (Link.database("ServiceB"), try target(configuration.serviceB)),
            (Link.database(Self.coordinatorName), try target(configuration.coordinatorDatabase)),
            (Link.toCoordinator, try local(Self.coordinatorName)),
            (Link.loadgenDatabase, try target(configuration.serviceA)),
        ]
        for participant in Self.participantNames {
            links.append((Link.coordinatorTo(participant), try local(participant)))
            links.append((Link.loadgenTo(participant), try local(participant)))
        }
        for coordinator in serviceNames where coordinator.hasPrefix(Self.coordinatorName) {
            links.append((Link.loadgenTo(coordinator), try local(coordinator)))
        }
        return links.map { (name: $0.0, host: $0.1.0, port: $0.1.1) }
    }

    private func startRelay(_ rtt: Duration) async throws {
        var arguments = ["relay", "--rtt", "\(Double(rtt.inMicroseconds) / 1000)ms", "--log-level", configuration.logLevel]
        if !configuration.keepRunning { arguments += ["--parent-pid", "\(getpid())"] }
        // each link listens on a port the system chooses (0), which the relay prints: a port picked here and handed
        // over could be taken by another program in between (it happened: a reference run ended on EADDRINUSE)
        let links = try relayLinks()
        // an IPv6 address is fine here: the relay splits the link at its first and last colon
        for link in links { arguments += ["--link", "\(link.name)=0:\(link.host):\(link.port)"] }
        let relay = try ChildProcess.spawn(
            name: Self.relayName, executable: configuration.executable, arguments: arguments,
            logPath: "\(configuration.logDirectory)/\(Self.relayName).log", controlled: true
        )
        processes[Self.relayName] = relay
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let listening = Self.relayPorts(in: relay.logTail(lines: 200))
            if links.allSatisfy({ listening[$0.name] != nil }) {
                for link in links { relayPorts[link.name] = listening[link.name] }
                return
            }
            if let status = relay.exitStatus() {
                throw LaunchError("the relay exited with status \(status) at start; its log (\(relay.logPath)) ends:\n\(relay.logTail())")
            }
            guard ContinuousClock.now < deadline else { throw LaunchError("the relay did not listen within 30 s; its log: \(relay.logPath)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The ports in the relay's "relay NAME 127.0.0.1:PORT" lines, by link name.
    static func relayPorts(in log: String) -> [String: Int] {
        var ports: [String: Int] = [:]
        for line in log.split(separator: "\n") where line.hasPrefix("relay ") {
            let words = line.split(separator: " ")
            guard words.count == 3, let port = words[2].split(separator: ":").last.flatMap({ Int($0) }) else { continue }
            ports[String(words[1])] = port
        }
        return ports
    }

    /// Partitions a relay link (`Link` names): new connections refused, open ones stalled.
    public func cut(_ link: String) async throws { try await relayCommand("cut \(link)") }
    public func heal(_ link: String) async throws { try await relayCommand("heal \(link)") }

    private func relayCommand(_ command: String) async throws {
        guard let relay = processes[Self.relayName] else { throw LaunchError("no relay runs: a partition needs one") }
        let done = relay.logTail(lines: 1000).components(separatedBy: "ok \(command)").count
        try relay.send(command)
        let deadline = ContinuousClock.now + .seconds(10)
        while relay.logTail(lines: 1000).components(separatedBy: "ok \(command)").count <= done {
            guard ContinuousClock.now < deadline else { throw LaunchError("the relay did not confirm '\(command)'") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Starts one service (again) on its port, and waits for its /health.
    public func startService(_ name: String) async throws {
        guard let port = ports[name] else { throw LaunchError("no service named '\(name)' in this stack") }
        var arguments: [String]
        let parent = (configuration.keepRunning ? [] : ["--parent-pid", "\(getpid())"]) + ["--log-level", configuration.logLevel]
        let relayed = { (link: String) in self.relayPorts[link].map { "http://127.0.0.1:\($0)" } }
        if name.hasPrefix(Self.coordinatorName) {
            let database = relayPorts[Link.database(Self.coordinatorName)].map { configuration.coordinatorDatabase.through(port: $0) }
                ?? configuration.coordinatorDatabase
            arguments = ["coordinator", "--port", "\(port)", "--database-url", database.urlString, "--instance-id", name]
            for participant in Self.participantNames {
                arguments += ["--participant", "\(participant)=\(relayed(Link.coordinatorTo(participant)) ?? url(participant))"]
            }
            if let toCoordinator = relayed(Link.toCoordinator) { arguments += ["--advertise-url", toCoordinator] }
            if name == Self.unbatchedCoordinatorName {
                arguments += ["--batch-window", "0"]
            } else if let window = configuration.batchWindow {
                arguments += ["--batch-window", "\(window.milliseconds)ms"]
            }
            arguments += configuration.coordinatorArguments
        } else {
            let own = name == "ServiceA" ? configuration.serviceA : configuration.serviceB
            let database = relayPorts[Link.database(name)].map { own.through(port: $0) } ?? own
            arguments = ["participant", "--name", name, "--port", "\(port)", "--database-url", database.urlString,
                         "--coordinator", relayed(Link.toCoordinator) ?? url(Self.coordinatorName)]
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
        guard let process = processes[name] else { return }
        // the life that ends keeps counting in cpuSeconds(): read just before the kill (what it uses after is nothing)
        if let seconds = process.cpuSeconds() { endedLives[cpuColumn(name), default: 0] += seconds }
        await process.kill9()
    }

    /// CPU seconds of processes killed and restarted (crash scenarios), by column, so that the totals only grow.
    private var endedLives: [String: Double] = [:]

    private func cpuColumn(_ name: String) -> String { name.hasPrefix(Self.coordinatorName) ? Self.coordinatorName : name }

    /// Graceful stop of everything (SIGTERM, then SIGKILL after a grace period); the relay last.
    public func stop() async {
        await withTaskGroup(of: Void.self) { group in
            for (name, process) in processes where name != Self.relayName { group.addTask { await process.stop() } }
        }
        if let relay = processes[Self.relayName] {
            relay.closeControl()
            if await relay.wait(timeout: .seconds(5)) == nil { await relay.stop() }
        }
        try? await client.shutdown()
    }

    /// Lets the processes run on (`--keep`): only this actor's own HTTP client is closed.
    public func detach() async {
        try? await client.shutdown()
    }

    /// CPU seconds used so far, by process: both coordinators count as "coordinator"; a process killed and started
    /// again counts both its lives.
    public func cpuSeconds() -> [String: Double] {
        var result = endedLives
        for (name, process) in processes {
            guard let seconds = process.cpuSeconds() else { continue }
            result[cpuColumn(name), default: 0] += seconds
        }
        return result
    }
}

extension DatabaseURL {
    /// The same database reached on another local port (through the relay).
    public func through(port: Int) -> DatabaseURL {
        var url = self
        url.endpoint = .tcp(host: "127.0.0.1", port: port)
        return url
    }
}
