import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// `dtx demo`: a throwaway PostgreSQL, ServiceA, ServiceB and a coordinator as separate processes; one completed
/// and one refused transaction per mode, with what each service shows; then a short load per mode.
public struct Demo: Sendable {
    public struct Options: Sendable {
        /// The `dtx` executable (the demo starts the services from it).
        public var executable: String
        /// Keep the cluster and the services running at the end, and say how to reach them.
        public var keep = false
        /// Transactions per mode in the short load.
        public var loadTransactions = 300
        public var loadClients = 4
        public init(executable: String) { self.executable = executable }
    }

    let options: Options
    let print: @Sendable (String) -> Void
    let logger: Logger

    public init(options: Options, print: @escaping @Sendable (String) -> Void, logger: Logger) {
        self.options = options
        self.print = print
        self.logger = logger
    }

    /// Runs the demo. `cleanup` receives what must be undone if the process is interrupted.
    public func run(cleanup: CleanupList) async throws {
        let directory = "/tmp/dtx-demo-\(getpid())"
        print("==> Starting three throwaway PostgreSQL servers, one per part, in \(directory)")
        let servers = try ServerTrio(directory: directory)
        if !options.keep { try servers.removeWhenProcessExits() }
        cleanup.add { if !options.keep { try? servers.destroy() } }
        do {
            try await servers.start(logger: logger)
        } catch {
            throw DemoFailure(part: "PostgreSQL", message: "\(error)", log: "\(directory)/*/postgres.log")
        }
        let urls = try servers.urls
        for line in servers.statusLines() { print("    \(line)") }

        var configuration = Stack.Configuration(
            executable: options.executable, logDirectory: "\(directory)/logs", serviceA: urls.a, serviceB: urls.b, coordinatorDatabase: urls.coordinator
        )
        configuration.keepRunning = options.keep
        let stack = Stack(configuration: configuration)
        cleanup.add { if !options.keep { stack.terminateNow() } }
        print("==> Starting ServiceA, ServiceB and the coordinator (separate processes)")
        try await stack.start()
        for name in Stack.participantNames + [Stack.coordinatorName] {
            print("    \(pad(name, 12)) \(await stack.url(name))   pid \(await stack.processes[name]!.pid)   log \(configuration.logDirectory)/\(name).log")
        }

        let client = ServiceClient()
        defer { Task { try? await client.shutdown() } }
        // ServiceB keeps only 5 of ProductB (id 2), so that a 10-item transaction on it is refused at the second service
        _ = try await urls.b.withConnection(logger: logger) { connection in
            try await connection.query("UPDATE products SET stock = 5, initial_stock = initial_stock - (stock - 5) WHERE id = 2", logger: logger)
        }
        print("")
        print("    Documented data: ProductA (id 1) stock 100 and ProductB (id 2) stock 200 at each service;")
        print("    for the refusal, ServiceB has been left with only 5 of ProductB.")

        let coordinator = await stack.coordinatorURL
        let services = [("ServiceA", await stack.url("ServiceA")), ("ServiceB", await stack.url("ServiceB"))]
        for mode in Mode.allCases {
            print("")
            print("==> \(mode.rawValue.uppercased()): \(Self.describe(mode))")
            for (label, product) in [("completes", Int64(1)), ("refused on stock at ServiceB", Int64(2))] {
                let before = try await stocks(client, services, product: product)
                let reply = try await client.post(
                    coordinator + "/v1/transactions", json: TransactionRequest(mode: mode, productId: product, quantity: 10), timeout: .seconds(60)
                )
                guard let view = try? reply.decode(TransactionView.self) else {
                    throw DemoFailure(part: "coordinator", message: "answered \(reply.status): \(String(decoding: reply.body, as: UTF8.self))",
                                      log: "\(configuration.logDirectory)/coordinator.log")
                }
                let after = try await stocks(client, services, product: product)
                print("    \(label): POST /v1/transactions {mode: \(mode.rawValue), product_id: \(product), quantity: 10} -> HTTP \(reply.status)")
                print("      worker_event \(view.id): \(view.status.rawValue) (phase \(view.phase))" + (view.errorMessage.map { "\n      reason: \($0)" } ?? ""))
                print("      " + pad("service", 10) + pad("row status", 18) + pad("stock before", 14) + "stock after")
                for (index, (name, url)) in services.enumerated() {
                    let row = try await client.get(url + "/tcc/status?worker_event_id=\(view.id)&product_id=\(product)", timeout: .seconds(5))
                    let status = (try? row.decode(BranchStatus.self).status?.rawValue) ?? nil
                    print("      " + pad(name, 10) + pad(status ?? "(no row)", 18) + pad("\(before[index])", 14) + "\(after[index])")
                }
            }
        }

        print("")
        print("==> Short load: \(options.loadTransactions) transactions per mode, \(options.loadClients) clients, 1,000 products")
        print("    (this is a demo, not the benchmark: `dtx bench` measures with warm-up, repetitions, baselines and a release build)")
        var workload = Workload()
        workload.products = 1000
        workload.stock = 1_000_000
        try await Seeder.seed(workload, serviceA: urls.a, serviceB: urls.b, logger: logger)
        let generator = LoadGenerator(client: client, workload: workload)
        print("    " + pad("mode", 6) + pad("tx/s", 9) + pad("p50 ms", 9) + pad("p99 ms", 9) + "outcomes")
        for mode in Mode.allCases {
            var plan = LoadPlan()
            plan.clients = options.loadClients
            plan.count = options.loadTransactions
            plan.warmup = .zero
            plan.duration = .seconds(120)
            let result = await generator.run(.coordinator(url: coordinator, mode: mode), plan: plan)
            let p = result.percentiles
            let o = result.outcomes
            print("    " + pad(mode.rawValue, 6) + pad(String(format: "%.0f", result.throughput), 9) + pad(String(format: "%.1f", p.p50), 9)
                + pad(String(format: "%.1f", p.p99), 9) + "\(o.completed) completed, \(o.failed + o.compensated) refused, \(o.errors + o.pending) other")
        }

        print("")
        print("==> Checking the invariants (dtx verify)")
        let verifier = Verifier(
            coordinator: urls.coordinator,
            participants: [.init(name: "ServiceA", database: urls.a), .init(name: "ServiceB", database: urls.b)],
            logger: logger
        )
        var violations = try await verifier.check()
        let deadline = ContinuousClock.now + .seconds(30)
        while !violations.isEmpty && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(500))  // let retries in flight settle
            violations = try await verifier.check()
        }
        if violations.isEmpty {
            print("    all invariants hold: one outcome per transaction, every service agrees, stock adds up, nothing in doubt")
        } else {
            for violation in violations.prefix(20) { print("    VIOLATION \(violation)") }
            throw DemoFailure(part: "invariants", message: "\(violations.count) violations", log: configuration.logDirectory)
        }

        print("")
        if options.keep {
            print("==> Kept running (--keep). Reach the services at:")
            for name in Stack.participantNames + [Stack.coordinatorName] {
                print("    \(pad(name, 12)) \(await stack.url(name))   (pid \(await stack.processes[name]!.pid))")
            }
            print("    the status page: \(coordinator)/")
            print("    e.g. \(options.executable) run --mode tcc --product-id 1 --quantity 1 --coordinator \(coordinator)")
            print("    databases: \(urls.a.urlString)  \(urls.b.urlString)  \(urls.coordinator.urlString)")
            await stack.detach()
            print("    stop them: kill \(await stack.processes.values.map { "\($0.pid)" }.joined(separator: " ")); \(options.executable) postgres stop --remove --servers 3 --dir \(directory)")
        } else {
            print("==> Stopping the services and removing the servers")
            await stack.stop()
            try? servers.destroy()
            print("    done")
        }
    }

    func stocks(_ client: ServiceClient, _ services: [(String, String)], product: Int64) async throws -> [Int64] {
        var result: [Int64] = []
        for (_, url) in services {
            result.append((try? await client.get(url + "/products/\(product)", timeout: .seconds(5)).decode(Product.self).stock) ?? -1)
        }
        return result
    }

    static func describe(_ mode: Mode) -> String {
        switch mode {
        case .tcc: "try at both, then confirm + finalize (or cancel)"
        case .saga: "reserve A, reserve B, confirm A, confirm B (or compensate in reverse)"
        case .xa: "PREPARE TRANSACTION at both, then COMMIT PREPARED (or ROLLBACK PREPARED)"
        }
    }
}

/// Which part of the demo failed, and where its log is.
public struct DemoFailure: Error, CustomStringConvertible {
    public var part: String
    public var message: String
    public var log: String
    public var description: String { "\(part) failed: \(message) (log: \(log))" }
}

/// Undo actions to run if the process is interrupted (Ctrl-C): run synchronously from a signal handler's queue.
public final class CleanupList: Sendable {
    private let actions = Mutex<[@Sendable () -> Void]>([])
    public init() {}
    public func add(_ action: @escaping @Sendable () -> Void) { actions.withLock { $0.append(action) } }
    /// Runs the actions, newest first, once.
    public func runAll() {
        let all = actions.withLock { actions in
            defer { actions = [] }
            return actions
        }
        for action in all.reversed() { action() }
    }
}


/// `text` left-aligned in a column of `width` characters (at least one space after it).
public func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
