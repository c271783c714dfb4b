import DTXCoordinator
import DTXHTTP
import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import Hummingbird
import NIOFoundationCompat
import PostgresNIO
import Testing

/// Quick retries, and timeouts long enough for a loaded 2-core machine running the tests in parallel (a participant
/// restarted under load may take seconds to answer again); tests that
/// need an abort by timeout set their own.
func testTiming() -> CoordinatorConfiguration.Timing {
    var timing = CoordinatorConfiguration.Timing()
    timing.branchTimeout = .seconds(3)
    timing.globalTimeout = .seconds(15)
    timing.initialBackoff = .milliseconds(20)
    timing.maxBackoff = .milliseconds(300)
    timing.recoveryInterval = .milliseconds(100)
    timing.leaseDuration = .seconds(20)
    timing.responseWait = .seconds(8)
    return timing
}

/// ServiceA and ServiceB, each on its own database, and (unless told otherwise) a coordinator in this process.
struct CoordinatorFixture: Sendable {
    let serviceA: ParticipantFixture.Parts
    let serviceB: ParticipantFixture.Parts
    let coordinatorDatabase: DatabaseURL
    let coordinator: RunningService?
    let client: ServiceClient
    /// The coordinator as built (its parts, its routes), when the fixture started one.
    let built: CoordinatorBox

    var coordinatorURL: String { coordinator!.url }

    /// `routeB`: put something (a flaky proxy) between the coordinator and ServiceB: gets B's URL, returns the URL
    /// the coordinator should use.
    static func with(
        startCoordinator: Bool = true,
        databases: (a: DatabaseURL, b: DatabaseURL, coordinator: DatabaseURL)? = nil,
        routeB: (String) async throws -> String = { $0 },
        configureParticipants: (inout ParticipantConfiguration) -> Void = { _ in },
        configure: (inout CoordinatorConfiguration) -> Void = { _ in },
        _ body: (CoordinatorFixture) async throws -> Void
    ) async throws {
        let a = try await ParticipantFixture.Parts.start("ServiceA", database: databases?.a, configure: configureParticipants)
        // ServiceB gets a port below the ephemeral range, so that a test can stop it and start it again on the same
        // port without another test's port-0 server taking it meanwhile
        let b = try await ParticipantFixture.Parts.startOnStablePort("ServiceB", database: databases?.b, configure: configureParticipants)
        let coordinatorDatabase = if let databases { databases.coordinator } else { try await TestPostgres.shared.newDatabase("coordinator") }
        let client = ServiceClient.forTests()
        var coordinator: RunningService?
        let built = CoordinatorBox()
        try await withCleanup {
            if startCoordinator {
                var configuration = CoordinatorConfiguration(
                    databaseURL: coordinatorDatabase,
                    participants: [.init(name: "ServiceA", url: a.service.url), .init(name: "ServiceB", url: try await routeB(b.service.url))]
                )
                configuration.port = 0
                configuration.timing = testTiming()
                configure(&configuration)
                let settings = configuration
                coordinator = try await RunningService.start { onPort in
                    let coordinator = try await buildCoordinator(settings, logger: TestPostgres.logger, onServerRunning: onPort)
                    await built.set(coordinator)
                    return coordinator.application
                }
            }
            try await body(CoordinatorFixture(
                serviceA: a, serviceB: b, coordinatorDatabase: coordinatorDatabase, coordinator: coordinator, client: client, built: built
            ))
        } cleanup: {
            await coordinator?.stop()
            await a.service.stop()
            await b.service.stop()
            try? await client.shutdown()
        }
    }

    func post(_ request: TransactionRequest) async throws -> ServiceClient.Reply {
        try await client.post(coordinatorURL + "/v1/transactions", json: request, timeout: .seconds(30))
    }

    func stock(_ parts: ParticipantFixture.Parts, _ product: Int64 = 1) async throws -> Int64 {
        try await scalar(parts.database, "SELECT stock FROM products WHERE id = \(product)")
    }

    func workerEventStatus(_ id: Int64) async throws -> String? {
        try await withDatabase(coordinatorDatabase) { connection in
            for try await status in try await connection.query("SELECT status FROM worker_events WHERE id = \(id)", logger: TestPostgres.logger)
                .decode(String.self)
            {
                return status
            }
            return nil
        }
    }

    /// DESIGN section 7 on this fixture's three databases, for the transactions logged so far:
    /// every transaction final, participants agree with it, stock = initial - committed, nothing left in doubt.
    func expectConsistent(initialA: Int64 = 100, initialB: Int64 = 100, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let rows: [(Int64, String, String)] = try await withDatabase(coordinatorDatabase) { connection in
            var rows: [(Int64, String, String)] = []
            for try await row in try await connection.query("SELECT id, status, mode FROM worker_events ORDER BY id", logger: TestPostgres.logger)
                .decode((Int64, String, String).self)
            {
                rows.append(row)
            }
            return rows
        }
        for (id, status, mode) in rows {
            #expect(status == "completed" || (status == "failed" && mode != "saga") || status == "compensated",
                    "worker_event \(id) (\(mode)) is \(status)", sourceLocation: sourceLocation)
        }
        for (parts, initialStock) in [(serviceA, initialA), (serviceB, initialB)] {
            let committed = try await scalar(parts.database, "SELECT COALESCE(sum(quantity), 0)::bigint FROM transactions WHERE status IN ('confirm') AND product_id = 1")
            let stock = try await scalar(parts.database, "SELECT stock FROM products WHERE id = 1")
            #expect(stock == initialStock - committed, "\(parts.name): stock \(stock), committed \(committed)", sourceLocation: sourceLocation)
            #expect(try await scalar(parts.database, "SELECT count(*) FROM open_branches") == 0,
                    "\(parts.name) has branches left in try or confirm_pending, or prepared transactions in doubt", sourceLocation: sourceLocation)
            for (id, status, _) in rows {
                let confirmed = try await scalar(parts.database, "SELECT count(*) FROM transactions WHERE worker_event_id = \(id) AND status = 'confirm'")
                #expect((status == "completed") == (confirmed == 1), "\(parts.name) disagrees on worker_event \(id) (\(status))", sourceLocation: sourceLocation)
            }
        }
    }
}

actor CoordinatorBox {
    var coordinator: Coordinator?
    func set(_ coordinator: Coordinator) { self.coordinator = coordinator }
}

extension ParticipantFixture {
    /// A running participant on its own database.
    struct Parts: Sendable {
        let name: String
        let database: DatabaseURL
        let service: RunningService
        let participant: Participant

        /// Starts on a random free port from 20000 to 31999 (outside Linux's ephemeral range, 32768-60999).
        static func startOnStablePort(
            _ name: String, database: DatabaseURL? = nil, configure: (inout ParticipantConfiguration) -> Void = { _ in }
        ) async throws -> Parts {
            let database = if let database { database } else { try await TestPostgres.shared.newDatabase(name.lowercased()) }
            var lastError: (any Error)?
            for _ in 0..<20 {
                do {
                    return try await start(name, database: database, port: Int.random(in: 20000..<32000), configure: configure)
                } catch {
                    lastError = error  // taken: try another
                }
            }
            throw lastError!
        }

        /// Starts again on `port`, retrying while the port is still being released. If it never is, the error says
        /// which sockets hold it.
        static func restart(_ name: String, database: DatabaseURL, port: Int) async throws -> Parts {
            let deadline = ContinuousClock.now + .seconds(30)
            while true {
                do {
                    return try await start(name, database: database, port: port)
                } catch where ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(100))
                } catch {
                    let holders = (try? Command.status(["ss", "-tanp", "sport = :\(port)"]).1) ?? "(ss failed)"
                    struct PortStillTaken: Error, CustomStringConvertible { let description: String }
                    throw PortStillTaken(description: "\(name) could not start again on port \(port): \(error)\n\(holders)")
                }
            }
        }

        static func start(_ name: String, database: DatabaseURL? = nil, port: Int = 0, configure: (inout ParticipantConfiguration) -> Void = { _ in }) async throws -> Parts {
            let database = if let database { database } else { try await TestPostgres.shared.newDatabase(name.lowercased()) }
            var configuration = participantConfiguration(name, database)
            configuration.port = port
            configure(&configuration)
            let (service, participant) = try await RunningService.participant(configuration)
            return Parts(name: name, database: database, service: service, participant: participant)
        }
    }
}

/// An HTTP proxy in front of a participant that misbehaves on purpose: answers 503 to the first `failFirst` calls,
/// and can hold answers (after forwarding the call) until released.
actor FlakyProxy {
    let target: String
    private var failuresLeft: Int
    private(set) var calls = 0
    private var holdPaths: Set<String> = []
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// false: forwards the path without its query, as a participant that knows no query parameter would read it.
    let forwardsQuery: Bool

    init(target: String, failFirst: Int = 0, forwardsQuery: Bool = true) {
        self.target = target
        self.failuresLeft = failFirst
        self.forwardsQuery = forwardsQuery
    }

    /// From now on, calls to these paths are forwarded, but their answer waits until `release()`.
    func hold(_ paths: Set<String>) {
        holdPaths = paths
        held = true
    }

    func release() {
        held = false
        for waiter in waiters { waiter.resume() }
        waiters = []
    }

    /// Whether the call should fail now; counts the call.
    fileprivate func admit() -> Bool {
        calls += 1
        if failuresLeft > 0 {
            failuresLeft -= 1
            return false
        }
        return true
    }

    fileprivate func waitIfHeld(_ path: String) async {
        guard held, holdPaths.contains(path) else { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    private(set) var heldCalls = 0
    fileprivate func noteHeld() { heldCalls += 1 }

    /// Starts the proxy's HTTP server; stop it with the returned service.
    nonisolated func start(client: ServiceClient) async throws -> RunningService {
        try await RunningService.start { onPort in
            let router = Router(context: DTXRequestContext.self)
            router.post("/**") { request, context -> Response in
                guard await self.admit() else { return .error(ProtocolError(.injectedFault, "flaky proxy: failing on purpose")) }
                let body = try await request.body.collect(upTo: 65536)
                let path = request.uri.path
                let query = self.forwardsQuery ? request.uri.query.map { "?" + $0 } ?? "" : ""
                let reply = try await client.raw("POST", self.target + path + query, body: Data(buffer: body), headers: [("content-type", "application/json")])
                if await self.held, await self.holdPaths.contains(path) {
                    await self.noteHeld()
                    await self.waitIfHeld(path)
                }
                return Response(status: .init(code: reply.status), headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: reply.body)))
            }
            return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: { await onPort($0.localAddress!.port!) }, logger: TestPostgres.logger)
        }
    }
}

