import AsyncHTTPClient
@testable import DTXCoordinator
import DTXBench
import DTXHTTP
@testable import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import Hummingbird
import PostgresNIO
import Prometheus
import Testing

/// Idempotency keys, paging, XA against a server without 2PC, rows the machines cannot drive, presumed abort, and a
/// reconciler that learns its coordinator and never stalls.
@Suite("Hardening: idempotency, paging, XA without 2PC, broken rows, reconciler")
struct HardeningTests {
    @Test("Idempotency-Key: a replay answers the same transaction, another body gets 422, concurrent requests make one")
    func idempotencyKey() async throws {
        try await CoordinatorFixture.with { f in
            let request = TransactionRequest(mode: .tcc, productId: 1, quantity: 5)
            func post(_ body: TransactionRequest, key: String) async throws -> ServiceClient.Reply {
                try await f.client.post(f.coordinatorURL + "/v1/transactions", json: body, headers: [("Idempotency-Key", key)], timeout: .seconds(30))
            }
            let first = try await post(request, key: "order-1")
            #expect(first.status == 200)
            let id = try first.decode(TransactionView.self).id
            let replay = try await post(request, key: "order-1")
            #expect(replay.status == 200)
            #expect(try replay.decode(TransactionView.self).id == id)
            #expect(try await f.stock(f.serviceA) == 95)
            let other = try await post(TransactionRequest(mode: .tcc, productId: 1, quantity: 6), key: "order-1")
            #expect(other.status == 422)
            #expect(other.error?.code == .idempotencyKeyReused)
            #expect(try await f.stock(f.serviceA) == 95)
            // eight at once with one new key: one transaction, one stock change, every answer names it
            let answers = try await withThrowingTaskGroup(of: (Int, Int64?).self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let reply = try await post(TransactionRequest(mode: .saga, productId: 1, quantity: 10), key: "order-2")
                        return (reply.status, try? reply.decode(TransactionView.self).id)
                    }
                }
                return try await group.reduce(into: [(Int, Int64?)]()) { $0.append($1) }
            }
            #expect(Set(answers.compactMap(\.1)).count == 1)
            #expect(answers.allSatisfy { $0.0 == 200 || $0.0 == 202 })
            #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE idempotency_key = 'order-2'") == 1)
            try await eventually("the keyed Saga is final") { try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE open") == 0 }
            #expect(try await f.stock(f.serviceA) == 85)
            #expect(try await f.stock(f.serviceB) == 85)
            // a key that is not 1 to 255 visible characters
            let bad = try await post(request, key: String(repeating: "k", count: 256))
            #expect(bad.status == 400)
            try await f.expectConsistent()
        }
    }

    @Test("a peer that sends a response head and then stalls: the call times out, with no answer")
    func stalledBody() async throws {
        let stalled = try await SilentServer.start(greeting: "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        var configuration = ServiceClient.Configuration()
        configuration.connectTimeout = .seconds(10)
        configuration.readTimeout = .seconds(1)
        let client = ServiceClient(configuration: configuration)
        try await withCleanup {
            // bounded from outside too, so that a call that never ends fails the test instead of hanging it
            let outcome = try await withThrowingTaskGroup(of: String.self) { group in
                group.addTask {
                    do {
                        _ = try await client.post(stalled.url + "/tcc/confirm", json: ["a": 1], timeout: .milliseconds(500))
                        return "answered"
                    } catch let error as HTTPClientError where error == .readTimeout || error == .deadlineExceeded {
                        return "timed out"
                    } catch {
                        return "other error: \(error)"
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(60))
                    return "still waiting after 60 s"
                }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
            // before, the call's timeout ended with the head and nothing bounded the body: it waited for ever
            #expect(outcome == "timed out")
            #expect(stalled.connections() == 1)
        } cleanup: {
            try? await client.shutdown()
            try? await stalled.channel.close()
        }
    }

    @Test("settings that would spin, refuse all work or never finish are refused at start, naming the flag")
    func unsafeSettings() throws {
        let url = try DatabaseURL("postgres://postgres@127.0.0.1:1/x")
        func coordinator(_ change: (inout CoordinatorConfiguration) -> Void) -> String {
            var configuration = CoordinatorConfiguration(databaseURL: url, participants: [.init(name: "ServiceA", url: "http://127.0.0.1:1")])
            change(&configuration)
            do { try configuration.validate() } catch { return "\(error)" }
            return "accepted"
        }
        #expect(coordinator { _ in } == "accepted")
        #expect(coordinator { $0.timing.initialBackoff = .zero }.contains("--initial-backoff must be above 0"))
        #expect(coordinator { $0.timing.recoveryInterval = .zero }.contains("--recovery-interval must be above 0"))
        #expect(coordinator { $0.timing.branchTimeout = .zero }.contains("--branch-timeout must be above 0"))
        #expect(coordinator { $0.timing.maxBackoff = .milliseconds(50) }.contains("--max-backoff"))
        #expect(coordinator { $0.maxDatabaseConnections = 0 }.contains("--max-connections"))
        #expect(coordinator { $0.timing.responseWait = .seconds(-1) }.contains("--response-wait"))
        func participant(_ change: (inout ParticipantConfiguration) -> Void) -> String {
            var configuration = ParticipantConfiguration(name: "ServiceA", databaseURL: url)
            change(&configuration)
            do { try configuration.validate() } catch { return "\(error)" }
            return "accepted"
        }
        #expect(participant { _ in } == "accepted")
        #expect(participant { $0.lockTimeout = .zero }.contains("--lock-timeout must be above 0"))
        #expect(participant { $0.reconciler.interval = .zero }.contains("--reconcile-interval"))
        #expect(participant { $0.maxDatabaseConnections = 0 }.contains("--max-connections"))
        #expect(participant { $0.name = "Service-A" }.contains("letters, digits or _"))
    }

    @Test("flags whose values would stop the process or quietly mean something else are refused, naming the flag")
    func badFlags() async throws {
        let url = "postgres://postgres@127.0.0.1:1/x"  // never reached: each is refused before any connection
        let coordinator = ["coordinator", "--database-url", url, "--participant", "ServiceA=http://127.0.0.1:1"]
        let participant = ["participant", "--name", "ServiceA", "--database-url", url]
        let scenario = try BenchTests.scenarioFile("flags")
        let crashTypo = try BenchTests.scenarioFile("flags-crash", extra: #", "crash": {"target": "serviceB", "atSeconds": 1, "downSeconds": 1}"#)
        let badName = try BenchTests.scenarioFile("flags-name", scenarioName: "../up|down")
        let cases: [([String], String)] = [
            // before: an integer overflow while parsing (signal 4), or later in nanosecond arithmetic
            (coordinator + ["--lease", "inf"], "'inf' is invalid for '--lease"),
            (coordinator + ["--lease", "1e16"], "'1e16' is invalid for '--lease"),
            (coordinator + ["--branch-timeout", "1e10", "--lease", "3e10"], "'1e10' is invalid for '--branch-timeout"),
            // before: silently 0, which turned batching off
            (coordinator + ["--batch-window", "0.5ms"], "'0.5ms' is invalid for '--batch-window"),
            (coordinator + ["--port", "70000"], "--port 70000 is not a TCP port"),
            (participant + ["--port=-1"], "--port -1 is not a TCP port"),
            (participant + ["--lock-timeout", "10s"], "--lock-timeout (10.0 seconds) must be below 5.0 seconds"),
            (participant + ["--retention-horizon=-1h"], "'-1h' is invalid for '--retention-horizon"),
            // before: taken as they came (a share above 1 failed every call, NaN none)
            (participant + ["--fault-error-rate", "1.5"], "--fault-error-rate 1.5 is not a share"),
            (participant + ["--fault-delay-rate", "nan"], "--fault-delay-rate nan is not a share"),
            // before: silently info
            (coordinator + ["--log-level", "verbose"], "--log-level 'verbose'"),
            // before: --rate 0 trapped (0/0 as an Int64) after the servers had started; inf sent for ever
            (["bench", "--scenario", scenario, "--rate", "0"], "--rate must be requests per second"),
            (["bench", "--scenario", scenario, "--rate", "inf"], "--rate must be requests per second"),
            (["bench", "--scenario", scenario, "--clients", "0"], "--clients: '0' is not a whole number"),
            // before: loaded, then a trap on a missing port when the crash came
            (["bench", "--scenario", crashTypo], "a crash kills ServiceA, ServiceB, coordinator, not 'serviceB'"),
            // a client command: what to fix, not HTTPClientError.emptyScheme or a bare "connection refused" (errno 111)
            (["run", "--mode", "tcc", "--coordinator", "notaurl"], "--coordinator 'notaurl' must be the coordinator's http(s) URL"),
            (["list", "--coordinator", "http://127.0.0.1:1"], "cannot call the coordinator at http://127.0.0.1:1: connection refused"),
            // a check made when the command runs points at the command's help, not at "Usage: dtx <subcommand>"
            (["report", "/tmp/dtx-test-no-such-folder"], "See 'dtx report --help'."),
            // before: --participant was ignored without --coordinator-database
            (["verify", "--participant", "ServiceA=postgres://postgres@127.0.0.1:1/x"], "--participant needs --coordinator-database"),
            // the flags to change, and to what (before: "the global timeout plus one branch call")
            (coordinator + ["--lease", "5s"], "raise --lease above 13.0 seconds"),
            // before: its logs went to a folder outside --out, and the '|' split the report's table rows
            (["bench", "--scenario", badName], "name '../up|down' must be 1 to 64 letters"),
            (["relay", "--rtt", "5ms", "--link", "x=0:127.0.0.1:0"], "--link 'x=0:127.0.0.1:0'"),
        ]
        for (index, (arguments, message)) in cases.enumerated() {
            let process = try ChildProcess.spawn(
                name: "flags", executable: try dtxExecutable(), arguments: arguments, logPath: "/tmp/dtx-test-\(getpid())-flags-\(index).log"
            )
            let status = await process.wait(timeout: .seconds(60))
            #expect(status == 1 || status == 64, "\(arguments.suffix(2)): exit status \(String(describing: status)) (above 128: a signal)")
            #expect(process.logTail(lines: 40).contains(message), "\(arguments.suffix(2)): \(process.logTail(lines: 40))")
        }
    }

    @Test("with retention off (horizon 0) the services keep running, and a graceful shutdown ends them without an error")
    func retentionOffKeepsRunning() async throws {
        // before, the retention service returned at once, and ServiceLifecycle then cancelled its whole group: the
        // service stopped as soon as it had started (the fixture's stop also fails a test whose service ends in error)
        try await CoordinatorFixture.with(configureParticipants: { $0.retention.horizon = .zero }, configure: { $0.retention.horizon = .zero }) { f in
            for _ in 0..<3 {
                let reply = try await f.post(TransactionRequest(mode: .tcc, productId: 1, quantity: 1))
                #expect(reply.status == 200)
            }
        }
    }

    @Test("dtx participant and dtx coordinator stopped with SIGTERM exit with status 0 and no error")
    func cleanExit() async throws {
        // before, each loop let its sleep's CancellationError out: "Error: CancellationError()" and status 1
        let database = try await TestPostgres.shared.newDatabase("cleanexit")
        let log = try await TestPostgres.shared.newDatabase("cleanexitlog")
        let (participantPort, coordinatorPort) = (try EmbeddedPostgres.freePort(), try EmbeddedPostgres.freePort())
        let commands: [(String, Int, [String])] = [
            ("participant", participantPort, ["participant", "--name", "ServiceA", "--port", "\(participantPort)", "--database-url", database.urlString]),
            ("coordinator", coordinatorPort, ["coordinator", "--port", "\(coordinatorPort)", "--database-url", log.urlString,
                                              "--participant", "ServiceA=http://127.0.0.1:\(participantPort)", "--retention-horizon", "0"]),
        ]
        let client = ServiceClient.forTests()
        try await withCleanup {
            for (name, port, arguments) in commands {
                let process = try ChildProcess.spawn(
                    name: name, executable: try dtxExecutable(), arguments: arguments + ["--parent-pid", "\(getpid())"],
                    logPath: "/tmp/dtx-test-\(getpid())-cleanexit-\(name).log"
                )
                try await eventually("\(name) answers /health") {
                    if let status = process.exitStatus() { throw LaunchError("\(name) exited with \(status): \(process.logTail())") }
                    return (try? await client.get("http://127.0.0.1:\(port)/health", timeout: .seconds(1)).status) == 200
                }
                process.signal(SIGTERM)
                let status = await process.wait(timeout: .seconds(60))
                #expect(status == 0, "\(name): \(process.logTail(lines: 5))")
                #expect(!process.logTail(lines: 20).contains("Error:"), "\(name): \(process.logTail(lines: 5))")
            }
        } cleanup: {
            try? await client.shutdown()
        }
    }

    @Test("SIGTERM while a request waits on a participant that never answers: the coordinator ends within its graceful shutdown bound")
    func shutdownBounded() async throws {
        let silent = try await SilentServer.start()
        let log = try await TestPostgres.shared.newDatabase("boundedstop")
        let port = try EmbeddedPostgres.freePort()
        // the first phase would go on for 120 s, retried at the silent participant (2 s per call: --branch-timeout 2s)
        let coordinator = try await startCoordinatorProcess(
            database: log, participants: [("ServiceA", silent.url)], instance: "boundedstop", port: port,
            extra: ["--global-timeout", "120s", "--lease", "200s", "--response-wait", "10s"]
        )
        let client = ServiceClient.forTests()
        try await withCleanup {
            let post = Task {
                try? await client.post("http://127.0.0.1:\(port)/v1/transactions", json: TransactionRequest(mode: .tcc, productId: 1, quantity: 1), timeout: .seconds(150))
            }
            defer { post.cancel() }
            try await eventually("the request is at the participant") { silent.connections() >= 1 }
            let sent = ContinuousClock.now
            coordinator.signal(SIGTERM)
            // graceful shutdown gives requests in flight 10 s, then cancels them; before, it waited for this one's 120 s
            let status = await coordinator.wait(timeout: .seconds(60))
            let took = ContinuousClock.now - sent
            #expect(status != nil, "still running \(took) after SIGTERM")
            // 10 s, then the cancellation: loosely bounded for a loaded machine, and no trap (a status above 128)
            #expect(took < .seconds(40), "took \(took)")
            #expect((status ?? 255) < 128, "exit status \(String(describing: status)): \(coordinator.logTail())")
        } cleanup: {
            await coordinator.stop(grace: .seconds(1))
            try? await client.shutdown()
            try? await silent.channel.close()
        }
    }

    /// A branch caller whose one participant, ServiceA, is down (nothing listens at its port), and a TCC transaction
    /// with one branch there whose first phase ends after `deadline`.
    static func withCallerToDownParticipant(
        deadline: TimeInterval, attempts: Int = 0, _ body: (BranchCaller, GlobalTransaction) async throws -> Void
    ) async throws {
        let client = ServiceClient.forTests()
        let caller = BranchCaller(
            client: client, participants: ["ServiceA": "http://127.0.0.1:\(try EmbeddedPostgres.freePort())"], branchTimeout: .seconds(1),
            policy: RetryPolicy(initial: .milliseconds(20), maximum: .milliseconds(100)), advertisedURL: AdvertisedURL("http://127.0.0.1:9"),
            batcher: nil, registry: PrometheusCollectorRegistry(), logger: TestPostgres.logger
        )
        let transaction = GlobalTransaction(
            id: 1, mode: .tcc, status: .pending, phase: "try", errorMessage: nil,
            branches: [BranchRecord(participant: "ServiceA", productId: 1, quantity: 1, attempts: attempts)],
            deadline: Date(timeIntervalSinceNow: deadline), firstPhaseEnds: .now + .milliseconds(Int64(deadline * 1000)), attempts: 0,
            createdAt: Date(), epoch: 1, leaseValidUntil: .now + .seconds(120)
        )
        try await withCleanup {
            try await body(caller, transaction)
        } cleanup: {
            try? await client.shutdown()
        }
    }

    @Test("a first phase retried against a participant that is down stops when its task is cancelled (the coordinator stopping)")
    func firstPhaseStopsWhenCancelled() async throws {
        try await Self.withCallerToDownParticipant(deadline: 120) { caller, transaction in
            let call = Task {
                var branch = transaction.branches[0]
                _ = await caller.callWithinDeadline(.tccTry, &branch, transaction: transaction)
                return branch.attempts
            }
            call.cancel()
            // before, a cancelled sleep returned at once and the loop called again, and again, until the 120 s deadline
            let attempts = try await withDeadline(.seconds(30)) { await call.value }
            #expect(attempts >= 1)
        }
    }

    @Test("a branch whose attempt count in the log is the largest integer (edited by hand) is called, not a crash")
    func attemptCountSaturates() async throws {
        // before, `attempts += 1` overflowed and stopped the process; every coordinator that claimed the row next did too
        try await Self.withCallerToDownParticipant(deadline: 3, attempts: .max) { caller, transaction in
            var branch = transaction.branches[0]
            let outcome = await caller.callWithinDeadline(.tccTry, &branch, transaction: transaction)
            guard case .retry = outcome else { Issue.record("a participant that is down is retried: \(outcome)"); return }
            #expect(branch.lastError != nil, "the participant was called")
            #expect(branch.attempts == .max)
        }
    }

    @Test("paging: every transaction once, newest first, filters held across pages, null next on the last page")
    func paging() async throws {
        try await CoordinatorFixture.with { f in
            for _ in 0..<7 { #expect(try await f.post(TransactionRequest(mode: .tcc, productId: 1, quantity: 1)).status == 200) }
            for _ in 0..<3 { #expect(try await f.post(TransactionRequest(mode: .saga, productId: 1, quantity: 1000)).status == 409) }
            func pages(_ query: String) async throws -> [[TransactionView]] {
                var result: [[TransactionView]] = []
                var cursor: String?
                repeat {
                    let url = f.coordinatorURL + "/v1/transactions?" + query + (cursor.map { "&cursor=\($0)" } ?? "")
                    let page = try await f.client.get(url, timeout: .seconds(5)).decode(TransactionList.self)
                    result.append(page.transactions)
                    cursor = page.next
                } while cursor != nil
                return result
            }
            let all = try await pages("limit=3")
            #expect(all.map(\.count) == [3, 3, 3, 1])
            let ids = all.flatMap { $0.map(\.id) }
            #expect(ids == ids.sorted(by: >))
            #expect(Set(ids).count == 10)
            let completed = try await pages("status=completed&limit=2")
            #expect(completed.map(\.count) == [2, 2, 2, 1])
            #expect(completed.joined().allSatisfy { $0.status == .completed && $0.mode == .tcc })
            let sagas = try await pages("mode=saga&limit=2")
            #expect(sagas.joined().count == 3 && sagas.joined().allSatisfy { $0.mode == .saga && $0.status == .compensated })
            #expect(try await pages("mode=xa").joined().isEmpty)
            // the last page says so with an explicit null
            let raw = String(decoding: try await f.client.get(f.coordinatorURL + "/v1/transactions?limit=50", timeout: .seconds(5)).body, as: UTF8.self)
            #expect(raw.contains(#""next":null"#))
            for bad in ["cursor=abc", "cursor=-1", "mode=2pc", "limit=0", "status=done"] {
                #expect(try await f.client.get(f.coordinatorURL + "/v1/transactions?" + bad, timeout: .seconds(5)).status == 400, "\(bad)")
            }
        }
    }

    @Test("XA with a participant whose server has max_prepared_transactions = 0: 409 xa_unavailable within the global timeout, nothing prepared; TCC works")
    func xaWithout2PC() async throws {
        let noXA = try await PrivateCluster.start("noxa-coordinated", databases: ["service_b"]) { $0.maxPreparedTransactions = 0 }
        try await withCleanup {
            let a = try await ParticipantFixture.Parts.start("ServiceA")
            let b = try await ParticipantFixture.Parts.start("ServiceB", database: try noXA.url("service_b"))
            let database = try await TestPostgres.shared.newDatabase("coordinator")
            var configuration = CoordinatorConfiguration(databaseURL: database, participants: [.init(name: "ServiceA", url: a.service.url), .init(name: "ServiceB", url: b.service.url)])
            configuration.port = 0
            configuration.timing = testTiming()
            let settings = configuration
            let coordinator = try await RunningService.start { onPort in try await buildCoordinator(settings, logger: TestPostgres.logger, onServerRunning: onPort).application }
            let client = ServiceClient()
            try await withCleanup {
                let start = ContinuousClock.now
                let xa = try await client.post(coordinator.url + "/v1/transactions", json: TransactionRequest(mode: .xa, productId: 1, quantity: 10), timeout: .seconds(30))
                #expect(ContinuousClock.now - start < settings.timing.globalTimeout)
                #expect(xa.status == 409)
                let view = try xa.decode(TransactionView.self)
                #expect(view.status == .failed)
                #expect(view.errorMessage?.contains("xa_unavailable") == true)
                for database in [a.database, b.database] {
                    #expect(try await scalar(database, "SELECT count(*) FROM open_branches") == 0)
                    #expect(try await scalar(database, "SELECT stock FROM products WHERE id = 1") == 100)
                }
                let tcc = try await client.post(coordinator.url + "/v1/transactions", json: TransactionRequest(mode: .tcc, productId: 1, quantity: 10), timeout: .seconds(30))
                #expect(tcc.status == 200)
                #expect(try await scalar(b.database, "SELECT stock FROM products WHERE id = 1") == 90)
            } cleanup: {
                await coordinator.stop()
                await a.service.stop()
                await b.service.stop()
                try? await client.shutdown()
            }
        } cleanup: {
            noXA.destroy()
        }
    }

    @Test("a log row whose phase does not fit its mode is marked failed with the reason, never a crash, and left alone")
    func brokenRow() async throws {
        try await CoordinatorFixture.with { f in
            _ = try await withDatabase(f.coordinatorDatabase) { connection in
                try await connection.query(
                    """
                    INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at)
                    VALUES (900000, 'pending', 'saga', 'prepare', '{}', '[]', now()), (900001, 'pending', 'tcc', 'compensate', '{}', '[]', now())
                    """,
                    logger: TestPostgres.logger
                )
            }
            try await eventually("the recovery loop marks both failed") {
                try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE id >= 900000 AND status = 'failed' AND error_message LIKE 'not driven:%'") == 2
            }
            #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE open") == 0)
            // the coordinator goes on serving
            #expect(try await f.post(TransactionRequest(mode: .saga, productId: 1, quantity: 1)).status == 200)
        }
    }

    /// A new coordinator log database with the rows `insert` writes (by hand, as an operator or another version might).
    static func logWithRows(_ name: String, _ insert: String) async throws -> DatabaseURL {
        let database = try await TestPostgres.shared.newDatabase(name)
        try await withDatabase(database) { connection in
            _ = try await Migrator.migrate(.coordinator, connection: connection, logger: TestPostgres.logger)
            try await connection.query(PostgresQuery(unsafeSQL: insert), logger: TestPostgres.logger)
        }
        return database
    }

    @Test("a first-phase deadline written as 'infinity' is far off, not a failed claim (PostgreSQL 15 cannot subtract it)")
    func infiniteDeadlineClaimed() async throws {
        let database = try await Self.logWithRows("infinite", """
            INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at)
            VALUES (3, 'pending', 'tcc', 'try', '{}', '[]', 'infinity'), (4, 'pending', 'tcc', 'try', '{}', '[]', now())
            """)
        try await PostgresClientRunner(url: database).run { client in
            let log = TransactionLog.forTests(client, owner: "t", holder: 1)
            // before the time left was computed as numbers, the claim's statement failed: no row was claimed, ever
            let claimed = try await log.claim(limit: 10)
            #expect(claimed.map(\.id).sorted() == [3, 4])
            let infinite = try #require(claimed.first { $0.id == 3 })
            #expect(infinite.firstPhaseEnds > .now + .seconds(86_400))
        }
    }

    @Test("a claimed row this version cannot read (an unknown branch state) is set aside; the rest of the claim is driven")
    func unreadableRow() async throws {
        let database = try await Self.logWithRows("unreadable", """
            INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at)
            VALUES (1, 'pending', 'tcc', 'try', '{}', '[{"participant": "ServiceA", "product_id": 1, "quantity": 1, "state": "bogus", "attempts": 0}]', now()),
                   (2, 'pending', 'tcc', 'try', '{}', '[]', now())
            """)
        try await PostgresClientRunner(url: database).run { client in
            let log = TransactionLog.forTests(client, owner: "t", holder: 1)
            // before, the claim threw for both: each came back every lease, and row 2 was never driven
            let first = try await log.claim(limit: 10)
            #expect(first.map(\.id) == [2])
            let setAside = try await scalar(database, "SELECT count(*) FROM worker_events WHERE id = 1 AND open AND next_retry_at > now() + interval '50 minutes'")
            #expect(setAside == 1)
            // (row 2 comes again: this test's holder holds no liveness lock, so its claim counts as a dead one's)
            let second = try await log.claim(limit: 10)
            #expect(second.map(\.id) == [2])
            // and it is shown, to be found: before, its view threw, and the list, the detail view and the status page
            // answered 500 (503 for the page) while it was in their page
            let view = try #require(try await log.view(id: 1))
            #expect(view.branches.isEmpty && (view.errorMessage ?? "").contains("branches unreadable"), "\(view)")
            #expect(try await log.list(status: nil, mode: nil, limit: 10, cursor: nil).transactions.map(\.id).sorted() == [1, 2])
        }
    }

    @Test("a row with a status this version does not know is never answered 'never began here' (which a participant takes as an abort)")
    func unknownStatusIsNotUnknownTransaction() async throws {
        // as a newer version could write it during a rolling upgrade (its CHECK relaxed here to let the row in)
        let database = try await Self.logWithRows("newstatus", "ALTER TABLE worker_events DROP CONSTRAINT worker_events_status_check")
        try await withDatabase(database) { connection in
            for statement in [
                "INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at) VALUES (7, 'decided_later', 'tcc', 'confirm_pending', '{}', '[]', now())",
                "UPDATE worker_event_ids SET next_id = 100, pruned_through = 0",
            ] { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: TestPostgres.logger) }
        }
        try await PostgresClientRunner(url: database).run { client in
            let log = TransactionLog.forTests(client, owner: "t", holder: 1)
            #expect(try await log.mayHaveIssued(id: 7))
            // before, the view was nil and the route answered 404 unknown_transaction: a participant's reconciler would
            // then have cancelled a branch of a transaction a newer coordinator had committed
            var answer = "a view"
            do {
                _ = try await log.view(id: 7)
            } catch let error as ProtocolError {
                answer = error.code.rawValue
            }
            #expect(answer == "internal_error")
            let missing = try await log.view(id: 8)
            #expect(missing == nil)
            // paging goes past it: 60 readable rows above it, one of them with a time written as 'infinity'
            try await withDatabase(database) { connection in
                try await connection.query("""
                    INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at)
                    SELECT n, 'completed', 'saga', 'confirm', '{}', '[]', now() FROM generate_series(10, 69) n
                    """, logger: TestPostgres.logger)
                try await connection.query("UPDATE worker_events SET status = 'decided_later' WHERE id = 40", logger: TestPostgres.logger)
                try await connection.query("UPDATE worker_events SET created_at = 'infinity' WHERE id = 60", logger: TestPostgres.logger)
            }
            var seen: [Int64] = []
            var cursor: Int64?
            for _ in 0..<5 {
                let page = try await log.list(status: nil, mode: nil, limit: 25, cursor: cursor)
                seen += page.transactions.map(\.id)
                guard let next = page.next else { break }
                cursor = Int64(next)
            }
            // before: the page with the unreadable row ended the paging (next null), and the infinite time failed its page
            #expect(seen == Array((10...69).reversed()).filter { $0 != 40 }, "\(seen)")
        }
    }

    @Test("a transaction naming a participant the coordinator was not started with is set aside for an operator, not retried in a loop")
    func unknownParticipantSetAside() async throws {
        try await CoordinatorFixture.with { f in
            // as after a restart with ServiceZ taken out of --participant while this cancel was still to be sent
            _ = try await scalar(f.coordinatorDatabase, """
                WITH row AS (
                    INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at)
                    VALUES (5, 'pending', 'tcc', 'cancel', '{}', '[{"participant": "ServiceZ", "product_id": 1, "quantity": 1, "state": "pending", "attempts": 0}]', now())
                    RETURNING 1)
                SELECT count(*) FROM row
                """)
            try await eventually("recovery took it and set it aside") {
                try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE id = 5 AND next_retry_at > now() + interval '9 minutes'") == 1
            }
            // before, it was called again after every backoff (about 50 error lines a minute for this one transaction)
            try await Task.sleep(for: .seconds(1))
            #expect(try await scalar(f.coordinatorDatabase, "SELECT attempts FROM worker_events WHERE id = 5") == 1)
            #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events WHERE id = 5 AND open") == 1)
        }
    }

    @Test("a first record that waits past the database timeout is answered 503, and the server ends it too: it is never written afterwards")
    func beginGivenUpIsNotWrittenLater() async throws {
        try await CoordinatorFixture.with(configure: { $0.timing.databaseTimeout = .milliseconds(800) }) { f in
            let reply = try await withDatabase(f.coordinatorDatabase) { holder in
                _ = try await holder.query("BEGIN", logger: TestPostgres.logger)
                _ = try await holder.query("LOCK TABLE worker_events IN ACCESS EXCLUSIVE MODE", logger: TestPostgres.logger)
                let reply = try await f.post(TransactionRequest(mode: .tcc, productId: 1, quantity: 1))
                // before, the statement the coordinator gave up on went on waiting for this lock, and was written once it
                // was released: a transaction answered "nothing logged" that recovery would then drive
                try await eventually("the server ended the first record's statement") {
                    try await scalar(f.coordinatorDatabase, """
                        SELECT count(*) FROM pg_stat_activity
                        WHERE query LIKE '%dtx_begin_many(%' AND state = 'active' AND pid <> pg_backend_pid()
                        """) == 0
                }
                _ = try await holder.query("ROLLBACK", logger: TestPostgres.logger)
                return reply
            }
            #expect(reply.status == 503, "\(String(decoding: reply.body, as: UTF8.self))")
            #expect(try await scalar(f.coordinatorDatabase, "SELECT count(*) FROM worker_events") == 0)
        }
    }

    @Test("a row whose attempt count in the log is the largest integer (edited by hand) is postponed, not refused by the database")
    func postponeAtMaxAttempts() async throws {
        let database = try await Self.logWithRows("maxattempts", """
            INSERT INTO worker_events (id, status, mode, phase, request, branches, deadline_at, attempts)
            VALUES (1, 'pending', 'tcc', 'try', '{}', '[]', now(), 2147483647)
            """)
        try await PostgresClientRunner(url: database).run { client in
            let log = TransactionLog.forTests(client, owner: "t", holder: 1)
            let transaction = try #require(try await log.claim(limit: 10).first)
            // before sql/coordinator/006: "integer out of range", and the row came back every lease instead
            try await log.postpone(transaction, delay: .seconds(60))
            let postponed = try await scalar(
                database, "SELECT count(*) FROM worker_events WHERE id = 1 AND attempts = 2147483647 AND next_retry_at > now() + interval '50 seconds'"
            )
            #expect(postponed == 1)
        }
    }

    @Test("two group commits carrying the same Idempotency-Keys in opposite order wait for each other; neither deadlocks")
    func beginKeysInAnyOrder() async throws {
        let begin = Self.beginRecords
        let database = try await TestPostgres.shared.newDatabase("keyorder")
        try await withDatabase(database) { _ = try await Migrator.migrate(.coordinator, connection: $0, logger: TestPostgres.logger) }
        try await withDatabase(database) { first in
            try await withDatabase(database) { second in
                for connection in [first, second] {
                    try await connection.query("BEGIN", logger: TestPostgres.logger)
                    try await connection.query("SET LOCAL lock_timeout = '30s'", logger: TestPostgres.logger)
                }
                _ = try await begin(first, [1], ["key-a"])
                // keys b, a: written a first, so it waits for the first session before it holds b
                let waiting = Task { try await begin(second, [2, 3], ["key-b", "key-a"]) }
                try await eventually("the second session waits for the first") {
                    try await scalar(database, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") == 1
                }
                // before sql/coordinator/004 the second held b already: this waited for it, and one of the two was a deadlock
                let b = try await begin(first, [4], ["key-b"])
                #expect(b.map(\.1) == [true])
                try await first.query("COMMIT", logger: TestPostgres.logger)
                let answers = try await waiting.value
                // both keys were taken first by the other session: each item answers the existing row, in item order
                #expect(answers.map(\.0) == [1, 2])
                #expect(answers.map(\.1) == [false, false])
                #expect(answers.map(\.2) == [4, 1])
                try await second.query("COMMIT", logger: TestPostgres.logger)
            }
        }
    }

    /// First records of TCC transactions `ids` under `keys`, in one `dtx_begin_many` call: (item, created, id) per item.
    @Sendable static func beginRecords(_ connection: PostgresConnection, _ ids: [Int64], _ keys: [String]) async throws -> [(Int32, Bool, Int64)] {
        let statement = BeginStatement(
            items: zip(ids, keys).map { .init(id: $0, mode: "tcc", phase: "try", request: "{}", branches: "[]", idempotencyKey: $1) },
            timeoutSeconds: 10, owner: "t", holder: 1, leaseSeconds: 20
        )
        var rows: [(Int32, Bool, Int64)] = []
        for try await row in try await connection.execute(statement, logger: TestPostgres.logger) { rows.append((row.0, row.1, row.3)) }
        return rows.sorted { $0.0 < $1.0 }
    }

    @Test("a first record whose Idempotency-Key row is pruned while the statement runs still gets its row, in item order")
    func beginKeyPrunedMeanwhile() async throws {
        let begin = Self.beginRecords
        let database = try await TestPostgres.shared.newDatabase("keypruned")
        try await withDatabase(database) { _ = try await Migrator.migrate(.coordinator, connection: $0, logger: TestPostgres.logger) }
        try await withDatabase(database) { holder in
            try await withDatabase(database) { caller in
                _ = try await begin(caller, [100], ["key-a"])  // an old transaction's key, committed
                // another session writes key-b and keeps its transaction open: the call below finds key-a taken, then
                // waits on key-b, between its two statements
                try await holder.query("BEGIN", logger: TestPostgres.logger)
                _ = try await begin(holder, [101], ["key-b"])
                let call = Task { try await begin(caller, [200, 201], ["key-a", "key-b"]) }
                try await eventually("the call waits on key-b") {
                    try await scalar(database, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") == 1
                }
                // retention prunes key-a's row meanwhile, and the other session gives key-b up
                _ = try await scalar(database, "WITH gone AS (DELETE FROM worker_events WHERE idempotency_key = 'key-a' RETURNING 1) SELECT count(*) FROM gone")
                try await holder.query("ROLLBACK", logger: TestPostgres.logger)
                // before sql/coordinator/007: key-a's item returned no row (one row for two items: the coordinator failed
                // the whole group commit, although it was written)
                let answers = try await call.value
                #expect(answers.map(\.0) == [1, 2])
                #expect(answers.map(\.1) == [true, true])
                #expect(answers.map(\.2) == [200, 201])
            }
        }
    }

    /// libfaketime's library (Debian's libfaketime; .ci/run installs it), or nil.
    static var libfaketime: String? {
        ["x86_64", "aarch64"].map { "/usr/lib/\($0)-linux-gnu/faketime/libfaketime.so.1" }.first { FileManager.default.fileExists(atPath: $0) }
    }

    @Test("a coordinator whose clock is ahead of its PostgreSQL servers' by more than the global timeout still runs its transactions")
    func clockAheadOfServers() async throws {
        let faketime = try #require(Self.libfaketime, "libfaketime is needed: apt-get install libfaketime")
        // every server 15 s behind this process (and so behind the coordinator and participants it runs)
        let cluster = try await PrivateCluster.start("clock", databases: ["coordinator", "service_a", "service_b"]) {
            $0.serverEnvironment = ["LD_PRELOAD": faketime, "FAKETIME": "-15", "DONT_FAKE_MONOTONIC": "1"]
        }
        try await withCleanup {
            let databases = (a: try cluster.url("service_a"), b: try cluster.url("service_b"), coordinator: try cluster.url("coordinator"))
            try await CoordinatorFixture.with(databases: databases) { f in
                let behind = Date().timeIntervalSince1970 - Double(try await scalar(f.coordinatorDatabase, "SELECT (extract(epoch FROM now()) * 1000)::bigint")) / 1000
                #expect(behind > 12, "the servers' clock is \(behind) s behind")
                // before, the driver compared the log's deadline_at with its own clock: out of time before the first call,
                // every transaction refused (409) with nothing tried
                for mode in Mode.allCases {
                    let reply = try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 10))
                    #expect(reply.status == 200, "\(mode): \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
                }
                try await f.expectConsistent(initialA: 100, initialB: 100)
            }
        } cleanup: {
            cluster.destroy()
        }
    }

    @Test("with its database unreachable, the coordinator's reads answer 503 database_unavailable (retry), not 500")
    func readsWithDatabaseDown() async throws {
        try await CoordinatorFixture.with(configure: { $0.timing.databaseTimeout = .seconds(2) }) { f in
            let admin = try await TestPostgres.shared.adminURL()
            let name = f.coordinatorDatabase.database
            try await withCleanup {
                try await withDatabase(admin) { connection in
                    try await connection.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(name) ALLOW_CONNECTIONS false"), logger: TestPostgres.logger)
                    try await connection.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(name)", logger: TestPostgres.logger)
                }
                for path in ["/v1/transactions/1", "/v1/transactions"] {
                    let reply = try await f.client.get(f.coordinatorURL + path, timeout: .seconds(30))
                    #expect(reply.status == 503, "\(path): \(String(decoding: reply.body, as: UTF8.self))")
                    #expect(reply.error?.code == .databaseUnavailable)
                }
            } cleanup: {
                _ = try? await withDatabase(admin) { connection in
                    try await connection.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(name) ALLOW_CONNECTIONS true"), logger: TestPostgres.logger)
                }
            }
        }
    }

    @Test("a coordinator given a new, empty log while its participants keep theirs: its ids are new to them and move stock")
    func newLogNewIds() async throws {
        let (a, b) = (try await TestPostgres.shared.newDatabase("participant"), try await TestPostgres.shared.newDatabase("participant"))
        let (oldLog, newLog) = (try await TestPostgres.shared.newDatabase("coordinator"), try await TestPostgres.shared.newDatabase("coordinator"))
        var old: TransactionView?
        try await CoordinatorFixture.with(databases: (a, b, oldLog)) { f in
            old = try await f.post(TransactionRequest(mode: .tcc, productId: 1, quantity: 10)).decode(TransactionView.self)
            #expect(old?.status == .completed)
        }
        // a reset (or a second installation): the same participants, a new log
        try await CoordinatorFixture.with(databases: (a, b, newLog)) { f in
            let reply = try await f.post(TransactionRequest(mode: .tcc, productId: 1, quantity: 10))
            let new = try reply.decode(TransactionView.self)
            #expect(new.status == .completed)
            #expect(new.id > old!.id)
            // before sql/coordinator/005 both logs began at 1: the try was taken for the old one's duplicate, no stock moved
            #expect(try await f.stock(f.serviceA) == 80)
            #expect(try await f.stock(f.serviceB) == 80)
            // the new log never handed out the old id: "not found", not "never began" (which a participant takes as an abort)
            let asked = try await f.client.get(f.coordinatorURL + "/v1/transactions/\(old!.id)", timeout: .seconds(10))
            #expect(asked.status == 404 && asked.error?.code == .notFound)
        }
    }

    @Test("an id the log may have handed out but has no row for is 404 unknown_transaction (presumed abort); others 404 not_found")
    func unknownTransaction() async throws {
        try await CoordinatorFixture.with { f in
            let id = try await f.post(TransactionRequest(mode: .tcc, productId: 1, quantity: 1)).decode(TransactionView.self).id
            let unknown = try await f.client.get(f.coordinatorURL + "/v1/transactions/\(id + 1)", timeout: .seconds(5))
            #expect(unknown.status == 404 && unknown.error?.code == .unknownTransaction)
            let never = try await f.client.get(f.coordinatorURL + "/v1/transactions/\(id + 1_000_000)", timeout: .seconds(5))
            #expect(never.status == 404 && never.error?.code == .notFound)
        }
    }

    @Test("the reconciler asks the coordinator that called (no --coordinator given): commit, presumed abort")
    func reconcilerLearnsCoordinator() async throws {
        try await CoordinatorFixture.with { f in
            let participant = try await ParticipantFixture.Parts.start("ServiceA", database: f.serviceA.database) { configuration in
                configuration.reconciler.staleAfter = .zero
            }
            let client = ServiceClient()
            try await withCleanup {
                // a committed transaction whose second phase at this participant was lost: the row is back in try
                let id = try await f.post(TransactionRequest(mode: .tcc, productId: 1, quantity: 10)).decode(TransactionView.self).id
                _ = try await scalar(f.serviceA.database, "UPDATE transactions SET status = 'try' WHERE worker_event_id = \(id) RETURNING 1")
                // a try for an id the coordinator handed out but never logged (its first record lost): presumed abort
                let lost = id + 1
                let reply = try await client.post(
                    participant.service.url + "/tcc/try", json: BranchRequest(workerEventId: lost, productId: 1, quantity: 10),
                    headers: [(CoordinatorHeader.name, f.coordinatorURL)], timeout: .seconds(5)
                )
                #expect(reply.status == 200)
                #expect(try await scalar(f.serviceA.database, "SELECT count(*) FROM coordinators") == 1)
                let reconciler = participant.participant.reconciler
                let report = await reconciler.runOnce()
                #expect(report.confirmed == 1)
                #expect(report.cancelled == 1)
                #expect(report.errors == 0)
                #expect(try await scalar(f.serviceA.database, "SELECT count(*) FROM open_branches") == 0)
                #expect(try await f.stock(f.serviceA) == 90)
            } cleanup: {
                await participant.service.stop()
                try? await client.shutdown()
            }
        }
    }

    @Test("presumed abort only from the branch's own coordinator: another that has called and does not know the id is not believed")
    func presumedAbortFromOwnerOnly() async throws {
        try await CoordinatorFixture.with { f in
            let participant = try await ParticipantFixture.Parts.start("ServiceA", database: f.serviceA.database) { configuration in
                configuration.reconciler.staleAfter = .zero
            }
            let client = ServiceClient.forTests()
            let gone = "http://127.0.0.1:\(try EmbeddedPostgres.freePort())"  // this branch's coordinator, unreachable
            try await withCleanup {
                let id = try await f.post(TransactionRequest(mode: .tcc, productId: 1, quantity: 10)).decode(TransactionView.self).id
                // ids the fixture's coordinator handed out and never logged: it answers unknown_transaction for both
                for (worker, coordinator) in [(id + 1, f.coordinatorURL), (id + 2, gone)] {
                    let reply = try await client.post(
                        participant.service.url + "/tcc/try", json: BranchRequest(workerEventId: worker, productId: 1, quantity: 10),
                        headers: [(CoordinatorHeader.name, coordinator)], timeout: .seconds(5)
                    )
                    #expect(reply.status == 200)
                }
                let report = await participant.participant.reconciler.runOnce()
                // its own coordinator's word cancels id + 1; id + 2 belongs to the unreachable one and waits for it
                #expect(report.cancelled == 1)
                #expect(try await scalar(f.serviceA.database, "SELECT count(*) FROM transactions WHERE worker_event_id = \(id + 1) AND status = 'cancel'") == 1)
                #expect(try await scalar(f.serviceA.database, "SELECT count(*) FROM transactions WHERE worker_event_id = \(id + 2) AND status = 'try'") == 1)
            } cleanup: {
                await participant.service.stop()
                try? await client.shutdown()
            }
        }
    }

    @Test("the reconciler's pages, one row each, visit every waiting row once")
    func reconcilerPagesOneRowEach() async throws {
        // not decided yet: every row waits
        try await DecisionStub.withParticipant(pageSize: 1, decide: { _ in .some(nil) }) { p in
            for worker in Int64(1)...5 { #expect(try await p.call(.tccTry, worker, quantity: 1).status == 200) }
            // the page cursor is (updated_at, id) as a Date: exact to the microsecond for any date near now (a Double
            // holds about 0.1 µs there), so a page's last row is never read again
            let report = try await withDeadline(.seconds(60)) { await p.participant.reconciler.runOnce() }
            #expect(report.waiting == 5)
        }
    }

    @Test("the reconciler visits every stale row page by page, and one row's error does not stop the rest")
    func reconcilerIsolatesErrors() async throws {
        try await DecisionStub.withParticipant(pageSize: 2, decide: { _ in .some(.abort) }) { p in
            for worker in Int64(1)...7 { #expect(try await p.call(.tccTry, worker, quantity: 1).status == 200) }
            // hold worker 4's row: its cancel waits past the lock timeout and fails this run
            try await withDatabase(p.database) { connection in
                try await connection.query("BEGIN", logger: TestPostgres.logger)
                try await connection.query("SELECT 1 FROM transactions WHERE worker_event_id = 4 FOR UPDATE", logger: TestPostgres.logger)
                let report = await p.participant.reconciler.runOnce()
                #expect(report.cancelled == 6)
                #expect(report.errors == 1)
                try await connection.query("ROLLBACK", logger: TestPostgres.logger)
            }
            let metrics = String(decoding: try await p.client.get(p.service.url + "/metrics", timeout: .seconds(5)).body, as: UTF8.self)
            #expect(metrics.contains("dtx_reconciler_errors_total 1"))
            let report = await p.participant.reconciler.runOnce()
            #expect(report.cancelled == 1 && report.errors == 0)
            #expect(try await p.count("SELECT count(*) FROM open_branches") == 0)
            #expect(try await p.stock() == 100)
        }
    }
}

/// A stand-in for the coordinator's status route that answers each id with a given decision (.some(nil): pending;
/// nil: 404 not_found).
struct DecisionStub: Sendable {
    let service: RunningService
    var url: String { service.url }

    static func start(_ decide: @escaping @Sendable (Int64) -> Decision??) async throws -> DecisionStub {
        let service = try await RunningService.start { onPort in
            let router = Router(context: DTXRequestContext.self)
            router.get("/v1/transactions/:id") { _, context -> Response in
                let id = context.parameters.get("id", as: Int64.self) ?? 0
                guard let decision = decide(id) else { return .error(ProtocolError(.notFound, "no transaction \(id)")) }
                let view = TransactionView(
                    id: id, mode: .tcc, status: decision == .commit ? .completed : decision == .abort ? .failed : .pending, phase: "x",
                    decision: decision, errorMessage: nil, branches: [], attempts: 0, createdAt: "", updatedAt: "", nextRetryAt: nil
                )
                return try .wire(view)
            }
            return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: { await onPort($0.localAddress!.port!) }, logger: TestPostgres.logger)
        }
        return DecisionStub(service: service)
    }

    /// A participant whose reconciler asks a stub deciding by `decide`, about every row at once, `pageSize` a page.
    static func withParticipant(
        pageSize: Int, decide: @escaping @Sendable (Int64) -> Decision??, _ body: (ParticipantFixture) async throws -> Void
    ) async throws {
        let stub = try await start(decide)
        try await withCleanup {
            try await ParticipantFixture.with(configure: { configuration in
                configuration.coordinatorURL = stub.url
                configuration.reconciler.staleAfter = .zero
                configuration.reconciler.pageSize = pageSize
            }, body)
        } cleanup: {
            await stub.service.stop()
        }
    }
}
