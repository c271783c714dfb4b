import DTXBench
import DTXCoordinator
import DTXHTTP
import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import PostgresNIO
import Testing

/// Retention: what is final and older than the horizon goes, what is open stays; no late or replayed request is
/// applied afterwards; pruning under load keeps every invariant; `dtx prune --dry-run` changes nothing.
@Suite("Retention", .serialized)
struct RetentionTests {
    static let horizon: Duration = .seconds(2)

    static func prune(_ database: DatabaseURL, dryRun: Bool = false) async throws -> Retention.Pass {
        try await withDatabase(database) { connection in
            guard let schema = try await Retention.schema(of: connection, logger: TestPostgres.logger) else {
                struct NotDTX: Error {}
                throw NotDTX()
            }
            var configuration = Retention.Configuration()
            configuration.horizon = horizon
            configuration.batch = 3  // several batches
            return try await Retention(schema: schema, configuration: configuration, logger: TestPostgres.logger).prune(connection, dryRun: dryRun)
        }
    }

    static func rows(_ database: DatabaseURL, _ table: String) async throws -> Int64 {
        try await scalar(database, PostgresQuery(unsafeSQL: "SELECT count(*) FROM \(table)"))
    }

    @Test("finished transactions of all three modes are pruned everywhere once the horizon passed; open ones stay; late requests change nothing")
    func pruneFinishedKeepOpen() async throws {
        try await CoordinatorFixture.with(configure: { $0.timing.globalTimeout = .seconds(1); $0.timing.responseWait = .seconds(1) }) { f in
            // finished: one completed and one refused per mode
            var completed: [Mode: Int64] = [:]
            for mode in Mode.allCases {
                completed[mode] = try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 1)).decode(TransactionView.self).id
                #expect(try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 1000)).status == 409)
            }
            // open: a transaction decided but stuck in its second phase (ServiceB down), and a try nobody decided
            await f.serviceB.service.stop()
            let stuck = try await f.post(TransactionRequest(mode: .tcc, productId: 2, quantity: 1))
            #expect(stuck.status == 202 || stuck.status == 409)
            let stuckID = try stuck.decode(TransactionView.self).id
            let a = f.serviceA.service.url
            #expect(try await f.client.post(a + "/tcc/try", json: BranchRequest(workerEventId: 999_999, productId: 2, quantity: 1), timeout: .seconds(5)).status == 200)

            try await Task.sleep(for: Self.horizon + .milliseconds(1500))  // past the horizon and the first phase's end
            let stockBefore = try await f.stock(f.serviceA)
            let pruned = try await Self.prune(f.serviceA.database)
            #expect((pruned.pruned["barrier"] ?? 0) > 0 && (pruned.pruned["transactions"] ?? 0) > 0, "\(pruned)")
            let coordinatorPass = try await Self.prune(f.coordinatorDatabase)
            #expect((coordinatorPass.pruned["worker_events"] ?? 0) == 6, "\(coordinatorPass)")
            // finished rows gone, open ones untouched
            #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events") == 1)
            #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE id = \(stuckID)") == 1)
            #expect(try await scalar(f.serviceA.database, "SELECT count(*) FROM transactions WHERE worker_event_id = \(completed[.tcc]!)") == 0)
            #expect(try await scalar(f.serviceA.database, "SELECT count(*) FROM barrier WHERE gid = \(completed[.saga]!)") == 0)
            #expect(try await scalar(f.serviceA.database, "SELECT count(*) FROM open_branches") == 1)  // the try nobody decided
            #expect(try await scalar(f.serviceA.database, "SELECT count(*) FROM barrier WHERE gid IN (\(stuckID), 999999)") > 0)
            #expect(try await f.stock(f.serviceA) == stockBefore)

            // a replayed first phase of a pruned transaction: refused with and without its deadline; no stock moves
            for mode in Mode.allCases {
                let op: BranchOperation = mode == .tcc ? .tccTry : mode == .saga ? .sagaReserve : .xaPrepare
                let plain = try await f.client.post(a + op.path, json: BranchRequest(workerEventId: completed[mode]!, productId: 1, quantity: 1), timeout: .seconds(5))
                #expect(plain.status == 409 && plain.error?.code == .branchPruned, "\(mode): \(String(decoding: plain.body, as: UTF8.self))")
                let late = try await f.client.post(a + op.path, json: BranchRequest(
                    workerEventId: completed[mode]!, productId: 1, quantity: 1, notAfter: Timestamp.string(Date(timeIntervalSinceNow: -60))
                ), timeout: .seconds(5))
                #expect(late.status == 409 && late.error?.code == .deadlinePassed)
            }
            // a duplicate second phase after pruning: answered, no stock moves
            for (op, mode) in [(BranchOperation.tccConfirm, Mode.tcc), (.tccFinalize, .tcc), (.sagaConfirm, .saga), (.xaCommit, .xa)] {
                let again = try await f.client.post(a + op.path, json: BranchRequest(workerEventId: completed[mode]!, productId: 1, quantity: 1), timeout: .seconds(5))
                #expect(again.status == 200 && again.effect == .duplicate, "\(op): \(String(decoding: again.body, as: UTF8.self))")
            }
            // and batched TCC's merged confirm and finalize (dtx_confirm_finalize)
            let merged = try await f.client.post(
                a + "/tcc/confirm?finalize=true", json: BranchRequest(workerEventId: completed[.tcc]!, productId: 1, quantity: 1), timeout: .seconds(5)
            )
            #expect(merged.status == 200 && merged.effect == .duplicate, "\(String(decoding: merged.body, as: UTF8.self))")
            #expect(try await f.stock(f.serviceA) == stockBefore)
            // the coordinator no longer knows the pruned ids, and says it does not know their outcome (no presumed abort)
            let gone = try await f.client.get(f.coordinatorURL + "/v1/transactions/\(completed[.tcc]!)", timeout: .seconds(5))
            #expect(gone.status == 404 && gone.error?.code == .notFound)
            // the invariants still add up (pruned committed quantities are kept per product)
            let violations = try await Verifier(
                coordinator: f.coordinatorDatabase, participants: [.init(name: "ServiceA", database: f.serviceA.database)], logger: TestPostgres.logger
            ).check()
            // (ServiceB, stopped above and not pruned, is left out on purpose: the verifier says so)
            let expected = ["left in", "still pending", "the log names participant 'ServiceB'"]
            #expect(violations.filter { violation in !expected.contains { violation.problem.contains($0) } }.isEmpty, "\(violations)")
        }
    }

    @Test("a null compensation keeps its barrier rows until its first phase has ended; the late first phase then does nothing")
    func nullCompensationKeptUntilFirstPhaseEnds() async throws {
        try await ParticipantFixture.with { p in
            // undos that come before their first phase, whose first phase may still arrive for another minute (a
            // global timeout longer than the horizon)
            let firstPhaseEnd = Timestamp.string(Date(timeIntervalSinceNow: 60))
            let cases: [(BranchOperation, BranchOperation, Int64)] = [(.tccCancel, .tccTry, 301), (.sagaCompensate, .sagaReserve, 302), (.xaRollback, .xaPrepare, 303)]
            for (undo, _, worker) in cases {
                let reply = try await p.client.post(
                    p.service.url + undo.path, json: BranchRequest(workerEventId: worker, productId: 1, quantity: 5, notAfter: firstPhaseEnd), timeout: .seconds(5)
                )
                #expect(reply.status == 200 && reply.effect == .nullCompensation, "\(undo): \(String(decoding: reply.body, as: UTF8.self))")
            }
            try await Task.sleep(for: Self.horizon + .milliseconds(500))  // the barrier rows are past the horizon
            // before sql/participant/009 the undo wrote no not_after: the rows went here, and the late try below held stock
            let pass = try await Self.prune(p.database)
            #expect((pass.pruned["barrier"] ?? 0) == 0, "\(pass)")
            #expect(try await p.count("SELECT count(*) FROM barrier WHERE gid BETWEEN 301 AND 303 AND not_after IS NOT NULL") == 6)
            for (_, origin, worker) in cases {
                let late = try await p.client.post(
                    p.service.url + origin.path, json: BranchRequest(workerEventId: worker, productId: 1, quantity: 5, notAfter: firstPhaseEnd), timeout: .seconds(5)
                )
                #expect(late.status == 200 || late.status == 409, "\(origin): \(String(decoding: late.body, as: UTF8.self))")
                #expect(late.effect != .applied, "\(origin) after its null compensation did something")
            }
            #expect(try await p.stock() == 100)
            #expect(try await p.count("SELECT count(*) FROM open_branches") == 0)
        }
    }

    @Test("a call anyone can make does not move the pruned watermark; the watermark never refuses a first phase with its deadline; old open branches do not stop retention")
    func watermarkOnlyFromCoordinatedRows() async throws {
        try await ParticipantFixture.with { p in
            let url = p.service.url
            func post(_ op: BranchOperation, _ worker: Int64, notAfter: Date?) async throws -> ServiceClient.Reply {
                try await p.client.post(url + op.path, json: BranchRequest(
                    workerEventId: worker, productId: 1, quantity: 1, notAfter: notAfter.map(Timestamp.string)
                ), timeout: .seconds(5))
            }
            // open tries nobody decides, older than the horizon at the prune below (three: the prune's batch)
            for worker: Int64 in 700...702 {
                #expect(try await post(.tccTry, worker, notAfter: Date(timeIntervalSinceNow: 1)).status == 200)
            }
            // a cancel with a made-up gid near the top of the id space and a deadline in the past: a null compensation
            let madeUp: Int64 = 9_000_000_000_000_000_000
            #expect(try await post(.tccCancel, madeUp, notAfter: Date(timeIntervalSinceNow: -3600)).effect == .nullCompensation)
            try await Task.sleep(for: Self.horizon + .milliseconds(1500))
            _ = try await Self.prune(p.database)
            // before sql/participant/010: the three open tries filled the prune's candidates, so the cancel's rows stayed;
            // once they went, the watermark was 9e18 and every later try was refused as pruned
            #expect(try await p.count("SELECT count(*) FROM barrier WHERE gid = \(madeUp)") == 0)
            #expect(try await p.count("SELECT pruned_gid_watermark FROM retention_state") == 0)
            #expect(try await p.count("SELECT count(*) FROM open_branches") == 3)

            // whatever the watermark says, a first phase with its deadline is judged by the deadline alone
            _ = try await p.count("UPDATE retention_state SET pruned_gid_watermark = \(madeUp) RETURNING 1")
            let live = try await post(.tccTry, 710, notAfter: Date(timeIntervalSinceNow: 30))
            #expect(live.status == 200 && live.effect == .applied, "\(String(decoding: live.body, as: UTF8.self))")
            let plain = try await post(.tccTry, 711, notAfter: nil)  // the documented body alone: the watermark judges it
            #expect(plain.status == 409 && plain.error?.code == .branchPruned)
            // an XA commit of a branch rolled back here is refused, not taken for a pruned commit (before: 200 duplicate)
            #expect(try await post(.xaRollback, 720, notAfter: Date(timeIntervalSinceNow: 30)).effect == .nullCompensation)
            let commit = try await post(.xaCommit, 720, notAfter: nil)
            #expect(commit.status == 409 && commit.error?.code == .branchCancelled, "\(String(decoding: commit.body, as: UTF8.self))")
        }
    }

    @Test("final branches that must stay (a first-phase end still to come) do not fill the prune's batches and stall it")
    func finalRowsThatStayDoNotStall() async throws {
        try await ParticipantFixture.with { p in
            func post(_ op: BranchOperation, _ worker: Int64, notAfter: Date) async throws -> ServiceClient.Reply {
                try await p.client.post(p.service.url + op.path, json: BranchRequest(
                    workerEventId: worker, productId: 1, quantity: 1, notAfter: Timestamp.string(notAfter)
                ), timeout: .seconds(5))
            }
            // three finished Sagas whose caller gave a first-phase end years ahead (the prune's batch is three), then one
            // with its end already past
            for worker: Int64 in 800...802 {
                #expect(try await post(.sagaReserve, worker, notAfter: Date(timeIntervalSinceNow: 3 * 365 * 86400)).status == 200)
                #expect(try await post(.sagaConfirm, worker, notAfter: Date(timeIntervalSinceNow: 3 * 365 * 86400)).status == 200)
            }
            // (3 s: time enough for the call on a loaded machine; the prune's cutoff, 2 s before it, is past it by then)
            #expect(try await post(.sagaReserve, 803, notAfter: Date(timeIntervalSinceNow: 3)).status == 200)
            #expect(try await post(.sagaConfirm, 803, notAfter: Date(timeIntervalSinceNow: 3)).status == 200)
            // quantities of earlier passes, as a previous version left them: a row per product per batch
            _ = try await p.count("WITH added AS (INSERT INTO pruned_quantities (product_id, quantity) VALUES (1, 5), (1, 7) RETURNING 1) SELECT count(*) FROM added")
            try await Task.sleep(for: Self.horizon + .milliseconds(3500))
            let pass = try await Self.prune(p.database)
            // folded to one row per product, the sum kept (803's committed 1 among it); before, rows only ever added up
            #expect(try await p.count("SELECT count(*) FROM pruned_quantities WHERE product_id = 1") == 1)
            #expect(try await p.count("SELECT sum(quantity)::bigint FROM pruned_quantities WHERE product_id = 1") == 13)
            // before sql/participant/011: the three that stay were the batch, nothing was pruned and the pass ended
            #expect(pass.pruned["transactions"] == 1, "\(pass)")
            #expect(try await p.count("SELECT count(*) FROM transactions WHERE worker_event_id = 803") == 0)
            #expect(try await p.count("SELECT count(*) FROM transactions WHERE worker_event_id BETWEEN 800 AND 802") == 3)
        }
    }

    @Test("a product whose row a prepared XA branch holds does not stop retention, nor retention that product")
    func pruneSkipsHeldProduct() async throws {
        try await ParticipantFixture.with { p in
            for (worker, product) in [(Int64(201), Int64(1)), (202, 2)] {
                #expect(try await p.call(.sagaReserve, worker, product: product, quantity: 1).status == 200)
                #expect(try await p.call(.sagaConfirm, worker, product: product, quantity: 1).status == 200)
            }
            try await Task.sleep(for: Self.horizon + .milliseconds(500))  // both branches past the horizon
            // prepared, not committed: the prepared transaction holds product 1's row until COMMIT PREPARED
            #expect(try await p.call(.xaPrepare, 203, product: 1, quantity: 1).status == 200)
            // (before sql/participant/008 the prune waited for that row, holding product 2's meanwhile)
            let pass = try await withDeadline(.seconds(30)) { try await Self.prune(p.database) }
            #expect(pass.pruned["transactions"] == 2, "\(pass)")
            #expect(try await p.count("SELECT count(*) FROM transactions WHERE worker_event_id IN (201, 202)") == 0)
            #expect(try await p.count("SELECT coalesce(sum(quantity), 0)::bigint FROM pruned_quantities WHERE product_id = 1") == 1)
            #expect(try await p.count("SELECT coalesce(sum(quantity), 0)::bigint FROM pruned_quantities WHERE product_id = 2") == 1)
            #expect(try await p.call(.sagaReserve, 204, product: 2, quantity: 1).status == 200)
            #expect(try await p.call(.xaCommit, 203, product: 1, quantity: 1).status == 200)
            // the stock still adds up with the pruned quantities
            let log = try await TestPostgres.shared.newDatabase("emptylog")
            try await withDatabase(log) { _ = try await Migrator.migrate(.coordinator, connection: $0, logger: TestPostgres.logger) }
            let violations = try await Verifier(coordinator: log, participants: [.init(name: "ServiceA", database: p.database)], logger: TestPostgres.logger).check()
            #expect(!violations.isEmpty, "the branches without a log row are named")
            #expect(violations.filter { $0.problem.contains("stock is") }.isEmpty, "\(violations)")
        }
    }

    @Test("dtx prune --dry-run says what would go and changes nothing; without it, it prunes")
    func pruneCommand() async throws {
        // a short first phase: a branch is kept until its first phase's end is a horizon old
        try await CoordinatorFixture.with(configure: { $0.timing.globalTimeout = .seconds(1); $0.timing.responseWait = .seconds(1) }) { f in
            for mode in Mode.allCases { #expect(try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 1)).status == 200) }
            try await Task.sleep(for: Self.horizon + .milliseconds(1500))  // past the horizon and the first phase's end
            let before = (try await Self.rows(f.serviceA.database, "barrier"), try await Self.rows(f.coordinatorDatabase, "worker_events"))
            let log = "/tmp/dtx-test-\(getpid())-prune.log"
            for (database, table) in [(f.serviceA.database, "barrier"), (f.coordinatorDatabase, "worker_events")] {
                let dry = try ChildProcess.spawn(name: "prune", executable: try dtxExecutable(),
                                                 arguments: ["prune", "--database-url", database.urlString, "--horizon", "2s", "--dry-run"], logPath: log + "." + table)
                #expect(await dry.wait(timeout: .seconds(60)) == 0)
                #expect(dry.logTail().contains("\(table): 0 rows") == false, "\(dry.logTail())")
                #expect(dry.logTail().contains("would be pruned"))
            }
            #expect(try await Self.rows(f.serviceA.database, "barrier") == before.0)
            #expect(try await Self.rows(f.coordinatorDatabase, "worker_events") == before.1)
            let real = try ChildProcess.spawn(name: "prune", executable: try dtxExecutable(),
                                              arguments: ["prune", "--database-url", f.coordinatorDatabase.urlString, "--horizon", "2s"], logPath: log + ".2")
            #expect(await real.wait(timeout: .seconds(60)) == 0)
            #expect(try await Self.rows(f.coordinatorDatabase, "worker_events") == 0)
            let bad = try ChildProcess.spawn(name: "prune", executable: try dtxExecutable(),
                                             arguments: ["prune", "--database-url", try await TestPostgres.shared.adminURL().urlString, "--horizon", "2s"], logPath: log + ".3")
            #expect(await bad.wait(timeout: .seconds(60)) != 0)
            #expect(bad.logTail().contains("neither a dtx participant"))
        }
    }

    @Test("retention running in every service while load runs: every invariant holds, and the metrics show it")
    func pruningUnderLoad() async throws {
        let quick: (inout Retention.Configuration) -> Void = { $0.horizon = .seconds(1); $0.interval = .milliseconds(200); $0.batch = 50 }
        try await CoordinatorFixture.with(configureParticipants: { quick(&$0.retention) }, configure: { quick(&$0.retention) }) { f in
            try await FaultToleranceTests.restock(f)
            let statuses = await Load.run(client: f.client, targets: Targets([f.coordinatorURL]), clients: 6, for: .seconds(5))
            #expect(statuses[200, default: 0] > 0, "the load made progress (how much depends on the machine): \(statuses)")
            try await eventually("retention pruned at both sides") {
                let metrics = String(decoding: try await f.client.get(f.serviceA.service.url + "/metrics", timeout: .seconds(5)).body, as: UTF8.self)
                let prunedThrough = try await scalar(f.coordinatorDatabase, "SELECT pruned_through FROM worker_event_ids")
                return metrics.contains("dtx_retention_pruned_rows_total{table=\"barrier\"}") && prunedThrough > 0
            }
            let metrics = String(decoding: try await f.client.get(f.coordinatorURL + "/metrics", timeout: .seconds(5)).body, as: UTF8.self)
            #expect(metrics.contains("dtx_retention_oldest_row_age_seconds{table=\"worker_events\"}"))
            try await eventually("every transaction final and every branch closed") {
                let open = try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE open")
                return open == 0
            }
            let violations = try await Verifier(
                coordinator: f.coordinatorDatabase,
                participants: [.init(name: "ServiceA", database: f.serviceA.database), .init(name: "ServiceB", database: f.serviceB.database)],
                logger: TestPostgres.logger
            ).check()
            #expect(violations.isEmpty, "\(violations.prefix(5))")
        }
    }
}
