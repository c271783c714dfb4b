import DTXBench
@testable import DTXCoordinator
import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO
import Testing

/// The `dtx` executable built next to the test bundle.
func dtxExecutable() throws -> String {
    let folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let path = folder.appendingPathComponent("dtx").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        struct Missing: Error, CustomStringConvertible { var description: String }
        throw Missing(description: "\(path) is missing: build it first (swift build)")
    }
    return path
}

/// A coordinator as its own process, so that it can be killed with SIGKILL.
func startCoordinatorProcess(
    database: DatabaseURL, participants: [(String, String)], instance: String, port: Int, extra: [String] = []
) async throws -> ChildProcess {
    var arguments = ["coordinator", "--port", "\(port)", "--database-url", database.urlString, "--instance-id", instance,
                     "--branch-timeout", "2s", "--global-timeout", "4s", "--lease", "8s", "--response-wait", "4s",
                     "--recovery-interval", "100ms", "--initial-backoff", "20ms", "--max-backoff", "300ms",
                     "--parent-pid", "\(getpid())", "--log-level", "warning"]
    for (name, url) in participants { arguments += ["--participant", "\(name)=\(url)"] }
    let log = "/tmp/dtx-test-\(getpid())-\(instance)-\(port).log"
    let process = try ChildProcess.spawn(name: instance, executable: try dtxExecutable(), arguments: arguments + extra, logPath: log)
    let client = ServiceClient()
    defer { Task { try? await client.shutdown() } }
    try await eventually("coordinator \(instance) answers /health") {
        if let status = process.exitStatus() { throw LaunchError("coordinator exited with \(status): \(process.logTail())") }
        return try await client.get("http://127.0.0.1:\(port)/health", timeout: .seconds(1)).status == 200
    }
    return process
}

@Suite("Coordinator crashes (SIGKILL) and takeover", .serialized)
struct CrashRecoveryTests {
    enum KillPoint: String, CaseIterable, Sendable {
        /// after the commit point was logged, while the second phase waits on ServiceB
        case afterCommitPoint
        /// after every first-phase call was applied, before the decision was logged
        case beforeDecision
    }

    @Test("killed, then restarted: every transaction reaches a consistent outcome", arguments: Mode.allCases, KillPoint.allCases)
    func killAndRestart(mode: Mode, point: KillPoint) async throws {
        let proxyClient = ServiceClient()
        let box = FlakyProxyBox()
        var proxyService: RunningService?
        try await withCleanup {
            try await CoordinatorFixture.with(startCoordinator: false) { f in
                let flaky = FlakyProxy(target: f.serviceB.service.url)
                await box.set(flaky)
                proxyService = try await flaky.start(client: proxyClient)
                let participants = [("ServiceA", f.serviceA.service.url), ("ServiceB", proxyService!.url)]
                let port = try EmbeddedPostgres.freePort()
                let held: Set<String> = point == .afterCommitPoint
                    ? ["/tcc/confirm", "/saga/confirm", "/xa/commit"]
                    : ["/tcc/try", "/saga/reserve", "/xa/prepare"]
                await flaky.hold(held)
                var coordinator = try await startCoordinatorProcess(database: f.coordinatorDatabase, participants: participants, instance: "c1", port: port)
                let client = f.client
                let request = Task {
                    try? await client.post("http://127.0.0.1:\(port)/v1/transactions", json: TransactionRequest(mode: mode, productId: 1, quantity: 10), timeout: .seconds(30))
                }
                switch point {
                case .afterCommitPoint:
                    try await eventually("the commit point is logged") {
                        let phase = try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE phase IN ('confirm_pending', 'confirm', 'commit') AND status = 'pending'")
                        let heldNow = await flaky.heldCalls
                        return phase == 1 && heldNow >= 1
                    }
                case .beforeDecision:
                    try await eventually("ServiceB applied its first-phase call") { await flaky.heldCalls >= 1 }
                    #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE phase IN ('try', 'reserve', 'prepare')") == 1)
                }
                await coordinator.kill9()
                _ = await request.value
                await flaky.release()
                await flaky.hold([])

                coordinator = try await startCoordinatorProcess(database: f.coordinatorDatabase, participants: participants, instance: "c1", port: port)
                try await eventually("the restarted coordinator finishes the transaction", timeout: .seconds(60)) {
                    try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE open") == 0
                }
                let final = try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE status = 'completed'")
                if point == .afterCommitPoint { #expect(final == 1, "after the commit point only forward") }
                try await f.expectConsistent()
                await coordinator.stop()
            }
        } cleanup: {
            await proxyService?.stop()
            try? await proxyClient.shutdown()
        }
    }

    @Test("two coordinators on one database, one killed mid-run: the other finishes its work")
    func takeover() async throws {
        let proxyClient = ServiceClient()
        var proxyService: RunningService?
        try await withCleanup {
            try await CoordinatorFixture.with(startCoordinator: false) { f in
                let flaky = FlakyProxy(target: f.serviceB.service.url)
                proxyService = try await flaky.start(client: proxyClient)
                let participants = [("ServiceA", f.serviceA.service.url), ("ServiceB", proxyService!.url)]
                let (port1, port2) = (try EmbeddedPostgres.freePort(), try EmbeddedPostgres.freePort())
                let c1 = try await startCoordinatorProcess(database: f.coordinatorDatabase, participants: participants, instance: "c1", port: port1)
                let c2 = try await startCoordinatorProcess(database: f.coordinatorDatabase, participants: participants, instance: "c2", port: port2)
                // hold ServiceB's second-phase answers so that c1 has work in flight when it dies
                await flaky.hold(["/tcc/confirm", "/saga/confirm", "/xa/commit", "/tcc/cancel", "/saga/cancel", "/xa/rollback"])
                let client = f.client
                let requests = Task {
                    await withTaskGroup(of: Void.self) { group in
                        for index in 0..<12 {
                            let mode = Mode.allCases[index % 3]
                            group.addTask {
                                _ = try? await client.post("http://127.0.0.1:\(port1)/v1/transactions", json: TransactionRequest(mode: mode, productId: 1, quantity: 3), timeout: .seconds(30))
                            }
                        }
                    }
                }
                try await eventually("c1 has transactions past their commit point") {
                    try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE lease_owner = 'c1' AND phase IN ('confirm_pending', 'confirm', 'commit')") >= 3
                }
                await c1.kill9()
                await requests.value
                await flaky.release()
                await flaky.hold([])
                try await eventually("c2 takes over every transaction when c1's leases end", timeout: .seconds(60)) {
                    try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE open") == 0
                }
                #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events") == 12)
                #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE status = 'completed'") >= 3)
                try await f.expectConsistent()
                await c2.stop()
            }
        } cleanup: {
            await proxyService?.stop()
            try? await proxyClient.shutdown()
        }
    }

    @Test("claims are exclusive, and every write is fenced by the claim's epoch and the phase it read")
    func exclusiveClaims() async throws {
        let database = try await TestPostgres.shared.newDatabase("claims")
        try await withDatabase(database) { connection in
            _ = try await Migrator.migrate(.coordinator, connection: connection, logger: TestPostgres.logger)
            try await connection.query(
                """
                INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at)
                SELECT g, 'pending', 'tcc', 'confirm_pending', '{}'::jsonb, '[]'::jsonb, now() FROM generate_series(1, 200) g
                """,
                logger: TestPostgres.logger
            )
        }
        // two live coordinator processes: each holds its liveness lock, so neither claims what the other holds
        let (lockOne, lockTwo) = (try await HolderLock.acquire(database, logger: TestPostgres.logger), try await HolderLock.acquire(database, logger: TestPostgres.logger))
        try await withCleanup { try await PostgresClientRunner(url: database).run { client in
            let (one, two) = (TransactionLog.forTests(client, owner: "one", holder: lockOne.holder), TransactionLog.forTests(client, owner: "two", holder: lockTwo.holder))
            var claimedByOne: [Int64] = []
            var claimedByTwo: [Int64] = []
            var heldByTwo: GlobalTransaction?
            for _ in 0..<10 {
                async let a = one.claim(limit: 15)
                async let b = two.claim(limit: 15)
                let (x, y) = try await (a, b)
                claimedByOne += x.map(\.id)
                claimedByTwo += y.map(\.id)
                heldByTwo = heldByTwo ?? y.first
            }
            #expect(Set(claimedByOne).isDisjoint(with: Set(claimedByTwo)))
            #expect(claimedByOne.count + claimedByTwo.count == 200)
            var transaction = try #require(heldByTwo)
            #expect(transaction.epoch == 1)
            transaction.status = .completed
            transaction.phase = "confirm"
            // a stale epoch (a driver that lost the row) and a phase other than the one in the log are refused
            var stale = transaction
            stale.epoch -= 1
            #expect(try await one.record(stale, expectedPhase: "confirm_pending", durable: true) == false)
            #expect(try await two.record(transaction, expectedPhase: "try", durable: true) == false)
            #expect(try await two.record(transaction, expectedPhase: "confirm_pending", durable: true) == true)
            #expect(try await two.record(transaction, expectedPhase: "confirm_pending", durable: true) == false)
        } } cleanup: {
            try? await lockOne.first.close()
            try? await lockTwo.first.close()
        }
    }

    @Test("the liveness lock taken again after its connection is lost: never by a session left waiting in the server")
    func livenessLockRetaken() async throws {
        let database = try await TestPostgres.shared.newDatabase("relock")
        try await withDatabase(database) { _ = try await Migrator.migrate(.coordinator, connection: $0, logger: TestPostgres.logger) }
        let lock = try await HolderLock.acquire(database, logger: TestPostgres.logger)
        let service = try await RunningService.start { report in
            Task { await report(0) }
            return lock
        }
        // this database's liveness locks only (other suites' coordinators run in parallel, and their holders count from 1 too)
        let mine = """
            locktype = 'advisory' AND classid = dtx_holder_lock_namespace()::oid AND objsubid = 2 AND objid = \(lock.holder)
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """
        @Sendable func count(_ condition: String) async throws -> Int64 {
            try await scalar(database, PostgresQuery(unsafeSQL: "SELECT count(*) FROM pg_locks WHERE \(mine) AND \(condition)"))
        }
        try await withCleanup {
            // the server drops the lock's session, and another session takes the lock before the service can
            try await withDatabase(database) { other in
                try await eventually("this test's session holds the lock the service lost") {
                    _ = try await other.query(PostgresQuery(unsafeSQL: "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE \(mine) AND granted"), logger: TestPostgres.logger)
                    let rows = try await other.query(
                        "SELECT pg_try_advisory_lock(dtx_holder_lock_namespace(), \(Int32(lock.holder)))", logger: TestPostgres.logger
                    )
                    for try await taken in rows.decode(Bool.self) { return taken }
                    return false
                }
                // the service tries again every second meanwhile; none of its tries may stay blocked in the server
                // (before, each one waited there, took the lock the moment this session let go, and was never closed)
                for _ in 0..<25 {
                    #expect(try await count("NOT granted") == 0)
                    try await Task.sleep(for: .milliseconds(100))
                }
                try await other.query("SELECT pg_advisory_unlock(dtx_holder_lock_namespace(), \(Int32(lock.holder)))", logger: TestPostgres.logger)
            }
            try await eventually("the service holds its lock again") { try await count("granted") == 1 }
        } cleanup: {
            await service.stop()
        }
    }

    @Test("the liveness lock goes with its service: stopped before it ever waited, or never run, the lock is let go")
    func livenessLockReleased() async throws {
        let database = try await TestPostgres.shared.newDatabase("unlock")
        try await withDatabase(database) { _ = try await Migrator.migrate(.coordinator, connection: $0, logger: TestPostgres.logger) }
        @Sendable func held(_ holder: Int64) async throws -> Int64 {
            try await scalar(database, PostgresQuery(unsafeSQL: """
                SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = dtx_holder_lock_namespace()::oid AND objsubid = 2
                  AND objid = \(holder) AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                """))
        }
        // cancelled before its first wait (a service group cancels every service when another fails to start)
        let cancelled = try await HolderLock.acquire(database, logger: TestPostgres.logger)
        #expect(try await held(cancelled.holder) == 1)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await cancelled.run()
        }
        try await task.value
        // before, nothing closed the connection: the lock stayed held until the process ended
        try await eventually("the lock is let go") { try await held(cancelled.holder) == 0 }
        // never run: the coordinator failed to build after taking it
        let unused = try await HolderLock.acquire(database, logger: TestPostgres.logger)
        await unused.release()
        try await eventually("the unused lock is let go") { try await held(unused.holder) == 0 }
    }

    @Test("a dead coordinator's rows are claimed at once, a live one's not until its lease ends")
    func liveness() async throws {
        let database = try await TestPostgres.shared.newDatabase("liveness")
        try await withDatabase(database) { connection in
            _ = try await Migrator.migrate(.coordinator, connection: connection, logger: TestPostgres.logger)
        }
        let alive = try await HolderLock.acquire(database, logger: TestPostgres.logger)
        let dead = try await HolderLock.acquire(database, logger: TestPostgres.logger)
        try await dead.first.close()
        try await withCleanup { try await withDatabase(database) { connection in
            try await connection.query(
                """
                INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at, lease_holder, lease_expires_at, lease_epoch)
                VALUES (1, 'pending', 'tcc', 'try', '{}', '[]', now(), \(alive.holder), now() + interval '1 hour', 1),
                       (2, 'pending', 'tcc', 'try', '{}', '[]', now(), \(dead.holder), now() + interval '1 hour', 1),
                       (3, 'pending', 'tcc', 'try', '{}', '[]', now(), \(alive.holder), now() - interval '1 second', 1)
                """,
                logger: TestPostgres.logger
            )
        }
        try await PostgresClientRunner(url: database).run { client in
            let log = TransactionLog.forTests(client, owner: "other", holder: 999)
            let claimed = try await log.claim(limit: 10)
            #expect(Set(claimed.map(\.id)) == [2, 3])
            #expect(claimed.allSatisfy { $0.epoch == 2 })
        } } cleanup: {
            try? await alive.first.close()
        }
    }
}


extension TransactionLog {
    /// A log on `client` held by `owner` / `holder`, with a 30 s lease, no group commit.
    static func forTests(_ client: PostgresClient, owner: String, holder: Int64) -> TransactionLog {
        TransactionLog(
            client: client, owner: owner, holder: holder, lease: .seconds(30), ids: IdAllocator(client: client, logger: TestPostgres.logger),
            machines: ModeMachines(), logger: TestPostgres.logger
        )
    }
}

/// Runs a PostgresClient for the duration of `body`.
struct PostgresClientRunner {
    let url: DatabaseURL

    func run(_ body: (PostgresClient) async throws -> Void) async throws {
        let client = PostgresClient(configuration: try url.clientConfiguration(maximumConnections: 10), backgroundLogger: TestPostgres.logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            do {
                try await body(client)
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
        }
    }
}
