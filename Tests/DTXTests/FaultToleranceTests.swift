import DTXBench
import DTXCoordinator
import DTXHTTP
import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The triggers of the hardening issue, each under load: two coordinators with one --instance-id, a coordinator
/// stopped (SIGSTOP) past its lease and resumed, the participants' PostgreSQL and the coordinator's PostgreSQL
/// stopped with `pg_ctl stop -m immediate` and started again. Each ends with every transaction final without any
/// operator action, every participant agreeing with the log, and stock conserved.
@Suite("Faults under load", .serialized)
struct FaultToleranceTests {
    static let stock: Int64 = 100_000

    @Test("two coordinators started with one --instance-id, the second while the first has work in flight")
    func sharedInstanceID() async throws {
        try await CoordinatorFixture.with(startCoordinator: false) { f in
            try await Self.restock(f)
            let participants = [("ServiceA", f.serviceA.service.url), ("ServiceB", f.serviceB.service.url)]
            let (port1, port2) = (try EmbeddedPostgres.freePort(), try EmbeddedPostgres.freePort())
            let c1 = try await startCoordinatorProcess(database: f.coordinatorDatabase, participants: participants, instance: "same", port: port1)
            let targets = Targets(["http://127.0.0.1:\(port1)"])
            let load = Task { await Load.run(client: f.client, targets: targets, clients: 8, for: .seconds(5)) }
            try await Task.sleep(for: .seconds(1))
            // its start-up must not touch c1's rows (it used to release every lease held under its name)
            let c2 = try await startCoordinatorProcess(database: f.coordinatorDatabase, participants: participants, instance: "same", port: port2)
            targets.set(["http://127.0.0.1:\(port1)", "http://127.0.0.1:\(port2)"])
            let statuses = await load.value
            #expect(statuses[200, default: 0] > 0, "the load made progress (how much depends on the machine): \(statuses)")
            try await Self.expectSettled(f)
            await c1.stop()
            await c2.stop()
        }
    }

    @Test("a coordinator stopped past its lease mid first phase, its work aborted by another, then resumed: it writes nothing")
    func stalledCoordinator() async throws {
        let proxyClient = ServiceClient()
        var proxyService: RunningService?
        var flaky: FlakyProxy?
        var stalled: ChildProcess?
        try await withCleanup {
            try await CoordinatorFixture.with(startCoordinator: false) { f in
                try await Self.restock(f)
                let proxy = FlakyProxy(target: f.serviceB.service.url)
                flaky = proxy
                proxyService = try await proxy.start(client: proxyClient)
                let participants = [("ServiceA", f.serviceA.service.url), ("ServiceB", proxyService!.url)]
                let (port1, port2) = (try EmbeddedPostgres.freePort(), try EmbeddedPostgres.freePort())
                // c1 cannot give up on its own before it is stopped: its branch calls wait 5 s, its first phase 6 s
                let timing = ["--lease", "12s", "--global-timeout", "6s", "--branch-timeout", "5s", "--response-wait", "2s"]
                let c1 = try await startCoordinatorProcess(database: f.coordinatorDatabase, participants: participants, instance: "c1", port: port1, extra: timing)
                let c2 = try await startCoordinatorProcess(database: f.coordinatorDatabase, participants: participants, instance: "c2", port: port2, extra: timing)
                // ServiceB applies its first-phase calls but their answers wait: c1 holds transactions mid first phase
                await proxy.hold(["/tcc/try", "/saga/reserve", "/xa/prepare"])
                let client = f.client
                let requests = Task {
                    await withTaskGroup(of: Void.self) { group in
                        for index in 0..<9 {
                            group.addTask {
                                _ = try? await client.post("http://127.0.0.1:\(port1)/v1/transactions", json: TransactionRequest(mode: Mode.allCases[index % 3], productId: 1, quantity: 1), timeout: .seconds(60))
                            }
                        }
                    }
                }
                try await eventually("ServiceB applied first-phase calls of c1") { await proxy.heldCalls >= 3 }
                c1.signal(SIGSTOP)
                stalled = c1
                let heldAtStop = await proxy.heldCalls
                // c1's leases run out; c2 claims its rows, finds their deadline passed and aborts them
                try await eventually("c2 took over and aborted c1's transactions mid first phase", timeout: .seconds(60)) {
                    try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE lease_epoch >= 2 AND NOT open") >= Int64(min(heldAtStop, 9))
                }
                // c1 resumes with its first phase answered: every write it tries is refused, and it calls nobody
                await proxy.release()
                await proxy.hold([])
                c1.signal(SIGCONT)
                stalled = nil
                await requests.value
                try await Self.expectSettled(f)
                #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE lease_epoch >= 2 AND status = 'completed'") == 0)
                #expect(c1.logTail(lines: 200).contains("lease lost"))
                await c1.stop()
                await c2.stop()
            }
        } cleanup: {
            stalled?.signal(SIGCONT)
            await flaky?.release()
            await proxyService?.stop()
            try? await proxyClient.shutdown()
        }
    }

    @Test("the participants' PostgreSQL stopped with pg_ctl stop -m immediate mid-load and started again")
    func participantDatabaseCrash() async throws {
        let cluster = try await PrivateCluster.start("participants-crash", databases: ["service_a", "service_b"], crashable: true)
        try await withCleanup {
            let databases = (a: try cluster.url("service_a"), b: try cluster.url("service_b"), coordinator: try await TestPostgres.shared.newDatabase("coordinator"))
            try await CoordinatorFixture.with(databases: databases, configureParticipants: Self.quickReconciler) { f in
                try await Self.restock(f)
                let load = Task { await Load.run(client: f.client, targets: Targets([f.coordinatorURL]), clients: 8, for: .seconds(6)) }
                try await Task.sleep(for: .seconds(2))
                try cluster.crash()
                try await Task.sleep(for: .seconds(1))
                try await cluster.restart()
                let statuses = await load.value
                #expect(statuses[200, default: 0] > 0, "the load made progress (how much depends on the machine): \(statuses)")
                try await Self.expectSettled(f)
            }
        } cleanup: {
            cluster.destroy()
        }
    }

    @Test("the coordinator's PostgreSQL stopped with pg_ctl stop -m immediate under load: no id handed out twice")
    func coordinatorDatabaseCrash() async throws {
        let cluster = try await PrivateCluster.start("coordinator-crash", databases: ["coordinator"], crashable: true)
        try await withCleanup {
            let databases = (a: try await TestPostgres.shared.newDatabase("servicea"), b: try await TestPostgres.shared.newDatabase("serviceb"), coordinator: try cluster.url("coordinator"))
            try await CoordinatorFixture.with(databases: databases, configureParticipants: Self.quickReconciler) { f in
                try await Self.restock(f)
                let load = Task { await Load.run(client: f.client, targets: Targets([f.coordinatorURL]), clients: 8, for: .seconds(6)) }
                try await Task.sleep(for: .seconds(2))
                try cluster.crash()
                // every id a participant has seen before the crash (in flight ones may still land: they are older)
                let seenBefore = try await Self.maxSeen(f)
                try await Task.sleep(for: .seconds(1))
                try await cluster.restart()
                let restarted = Date()
                let statuses = await load.value
                #expect(statuses[200, default: 0] > 0, "the load made progress (how much depends on the machine): \(statuses)")
                try await Self.expectSettled(f)
                let newest = try await scalar(f.coordinatorDatabase, "SELECT coalesce(min(id), 0) FROM worker_events WHERE created_at >= \(restarted)")
                #expect(newest > seenBefore, "an id handed out after the restart (\(newest)) is not above every id seen before it (\(seenBefore))")
                #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE created_at >= \(restarted)") > 0)
            }
        } cleanup: {
            cluster.destroy()
        }
    }

    @Test("an abort decision survives a crash of the log's server: nobody repeats a first phase its driver has already aborted")
    func abortSurvivesLogCrash() async throws {
        // A driver outlives a crash of its log's server. Before, the abort was not waited for on disk: the crash lost it
        // (and the first record with it), so another driver could repeat the first phase and commit while this one
        // still sent its cancels: a split outcome. Each transaction here is refused at ServiceB (no stock there), so
        // its last durable write is the abort; the server is crashed before its WAL writer (10 s here) runs.
        let cluster = try await PrivateCluster.start("abort-crash", databases: ["coordinator"], crashable: true)
        try await withCleanup {
            let databases = (a: try await TestPostgres.shared.newDatabase("servicea"), b: try await TestPostgres.shared.newDatabase("serviceb"), coordinator: try cluster.url("coordinator"))
            try await CoordinatorFixture.with(databases: databases, configureParticipants: Self.quickReconciler) { f in
                _ = try await scalar(f.serviceB.database, "UPDATE products SET stock = 0, initial_stock = 0 WHERE id = 1 RETURNING 1")
                var ids: [Mode: Int64] = [:]
                for mode in Mode.allCases {
                    let reply = try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 1))
                    #expect(reply.status == 409, "\(mode): \(reply.status)")
                    ids[mode] = try reply.decode(TransactionView.self).id
                }
                try cluster.crash()
                try await cluster.restart()
                let abortPhases: [Mode: String] = [.tcc: "cancel", .saga: "compensate", .xa: "rollback"]
                for (mode, id) in ids {
                    let phase = try await textValue(f.coordinatorDatabase, "SELECT phase FROM worker_events WHERE id = \(id)") ?? "lost"
                    #expect(phase == abortPhases[mode], "\(mode) \(id): the abort decision after the crash: \(phase)")
                }
                try await Self.expectSettled(f, initial: (100, 0))
            }
        } cleanup: {
            cluster.destroy()
        }
    }

    // MARK: Helpers

    /// Reconcilers that run every second and ask about a branch after two, and learn the coordinator from its calls.
    static func quickReconciler(_ configuration: inout ParticipantConfiguration) {
        configuration.reconciler.interval = .seconds(1)
        configuration.reconciler.staleAfter = .seconds(2)
        configuration.reconciler.coordinatorTimeout = .seconds(1)
    }

    static func restock(_ f: CoordinatorFixture) async throws {
        for parts in [f.serviceA, f.serviceB] {
            _ = try await scalar(parts.database, "UPDATE products SET stock = \(stock), initial_stock = \(stock) WHERE id = 1 RETURNING 1")
        }
    }

    static func maxSeen(_ f: CoordinatorFixture) async throws -> Int64 {
        max(try await scalar(f.serviceA.database, "SELECT coalesce(max(gid), 0) FROM barrier"),
            try await scalar(f.serviceB.database, "SELECT coalesce(max(gid), 0) FROM barrier"))
    }

    /// Every transaction final and every branch closed, without help, then the invariants.
    static func expectSettled(
        _ f: CoordinatorFixture, initial: (a: Int64, b: Int64) = (stock, stock), sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        try await eventually("every transaction final and every branch closed", timeout: .seconds(120)) {
            let log = try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE open")
            let a = try await scalar(f.serviceA.database, "SELECT count(*) FROM open_branches")
            let b = try await scalar(f.serviceB.database, "SELECT count(*) FROM open_branches")
            return log + a + b == 0
        }
        try await f.expectConsistent(initialA: initial.a, initialB: initial.b, sourceLocation: sourceLocation)
        // a branch of a transaction the log does not know (its first record lost) must have been undone
        let verifier = Verifier(
            coordinator: f.coordinatorDatabase,
            participants: [.init(name: "ServiceA", database: f.serviceA.database), .init(name: "ServiceB", database: f.serviceB.database)],
            logger: TestPostgres.logger
        )
        let violations = try await verifier.check()
        #expect(violations.isEmpty, "\(violations.prefix(5))", sourceLocation: sourceLocation)
    }
}

/// The coordinators a load sends to, changeable while it runs.
final class Targets: Sendable {
    private let urls: Mutex<[String]>
    init(_ urls: [String]) { self.urls = Mutex(urls) }
    func set(_ urls: [String]) { self.urls.withLock { $0 = urls } }
    func pick() -> String { urls.withLock { $0.randomElement()! } }
}

/// A closed-loop load of all three modes on product 1, quantity 1; returns how many answers of each status (0: no
/// answer).
enum Load {
    static func run(client: ServiceClient, targets: Targets, clients: Int, for duration: Duration) async -> [Int: Int] {
        let end = ContinuousClock.now + duration
        return await withTaskGroup(of: [Int: Int].self) { group in
            for index in 0..<clients {
                group.addTask {
                    var statuses: [Int: Int] = [:]
                    var round = index
                    while ContinuousClock.now < end {
                        round += 1
                        let request = TransactionRequest(mode: Mode.allCases[round % 3], productId: 1, quantity: 1)
                        let status = (try? await client.post(targets.pick() + "/v1/transactions", json: request, timeout: .seconds(30)).status) ?? 0
                        statuses[status, default: 0] += 1
                        if status == 0 || status >= 500 { try? await Task.sleep(for: .milliseconds(50)) }
                    }
                    return statuses
                }
            }
            return await group.reduce(into: [Int: Int]()) { total, part in total.merge(part, uniquingKeysWith: +) }
        }
    }
}
