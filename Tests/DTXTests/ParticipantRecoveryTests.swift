import DTXHTTP
import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Participant: restarts, reconciler, bad input")
struct ParticipantRecoveryTests {
    @Test("a prepared transaction survives a participant restart, then commits or rolls back")
    func preparedSurvivesRestart() async throws {
        let database = try await TestPostgres.shared.newDatabase("restart")
        let client = ServiceClient()
        try await withCleanup {
            var first: ParticipantFixture.Parts? = try await .start("ServiceA", database: database)
            // two products: a prepared transaction keeps its row lock until it is resolved
            for worker: Int64 in [21, 22] {
                let reply = try await client.post(first!.service.url + "/xa/prepare", json: BranchRequest(workerEventId: worker, productId: worker - 20, quantity: 10), timeout: .seconds(5))
                #expect(reply.status == 200)
            }
            await first!.service.stop()
            first = nil
            #expect(try await scalar(database, "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()") == 2)

            let second = try await ParticipantFixture.Parts.start("ServiceA", database: database)
            let commit = try await client.post(second.service.url + "/xa/commit", json: BranchRequest(workerEventId: 21, productId: 1, quantity: 10), timeout: .seconds(5))
            #expect(commit.status == 200)
            let rollback = try await client.post(second.service.url + "/xa/rollback", json: BranchRequest(workerEventId: 22, productId: 2, quantity: 10), timeout: .seconds(5))
            #expect(rollback.status == 200)
            #expect(try rollback.decode(BranchResponse.self).effect == .applied)
            #expect(try await scalar(database, "SELECT stock FROM products WHERE id = 1") == 90)
            #expect(try await scalar(database, "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()") == 0)
            // the rolled-back branch's late prepare does nothing
            let late = try await client.post(second.service.url + "/xa/prepare", json: BranchRequest(workerEventId: 22, productId: 2, quantity: 10), timeout: .seconds(5))
            #expect(late.status == 409)
            await second.service.stop()
        } cleanup: {
            try? await client.shutdown()
        }
    }

    @Test("the reconciler resolves every leftover state from the coordinator's answer")
    func reconciler() async throws {
        // A stub of the coordinator's status route: 31 and 34 committed, 32 and 35 aborted, 33 undecided, 36 unknown.
        let decisions: [Int64: Decision?] = [31: .commit, 32: .abort, 33: nil, 34: .commit, 35: .abort]
        let stub = try await DecisionStub.start { decisions[$0] }
        try await withCleanup {
            try await ParticipantFixture.with(configure: {
                $0.coordinatorURL = stub.url
                $0.reconciler.staleAfter = .zero
            }) { p in
                // 30: TCC confirm_pending; 31-33: TCC tries; 34, 35: XA prepared; 36: saga reserve, unknown to the coordinator
                _ = try await p.call(.tccTry, 30)
                _ = try await p.call(.tccConfirm, 30)
                for worker: Int64 in [31, 32, 33] { #expect(try await p.call(.tccTry, worker).status == 200) }
                #expect(try await p.call(.sagaReserve, 36).status == 200)
                // XA on products of their own: a prepared transaction keeps its row lock until resolved
                _ = try await scalar(p.database, "INSERT INTO products (id, name, stock) VALUES (3, 'ProductC', 300) RETURNING id")
                #expect(try await p.call(.xaPrepare, 34, product: 2).status == 200)
                #expect(try await p.call(.xaPrepare, 35, product: 3).status == 200)

                let report = await p.participant.reconciler.runOnce()
                #expect(report.finalized == 1)
                #expect(report.confirmed == 1)
                #expect(report.cancelled == 1)
                #expect(report.committed == 1)
                #expect(report.rolledBack == 1)
                #expect(report.waiting == 2)
                #expect(try await p.rowStatus(30) == "confirm")
                #expect(try await p.rowStatus(31) == "confirm")
                #expect(try await p.rowStatus(32) == "cancel")
                #expect(try await p.rowStatus(33) == "try")
                #expect(try await p.rowStatus(34, product: 2) == "confirm")
                #expect(try await p.rowStatus(35, product: 3) == nil)
                #expect(try await p.stock(3) == 300)
                #expect(try await p.rowStatus(36) == "try")
                // 30, 31, 33 and 36 hold 10 each of product 1; 34 holds 10 of product 2
                #expect(try await p.stock(1) == 60)
                #expect(try await p.stock(2) == 190)
                #expect(try await p.count("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()") == 0)
                // a second run changes nothing
                let again = await p.participant.reconciler.runOnce()
                #expect(again.waiting == 2 && again.confirmed == 0 && again.cancelled == 0)
            }
        } cleanup: {
            await stub.service.stop()
        }
    }

    @Test("with no coordinator reachable, stale branches wait and nothing changes")
    func reconcilerWithoutCoordinator() async throws {
        try await ParticipantFixture.with(configure: {
            $0.coordinatorURL = "http://127.0.0.1:1"
            $0.reconciler.staleAfter = .zero
            $0.reconciler.coordinatorTimeout = .milliseconds(300)
        }) { p in
            _ = try await p.call(.tccTry, 41)
            _ = try await p.call(.xaPrepare, 42)
            let report = await p.participant.reconciler.runOnce()
            #expect(report.waiting == 2)
            #expect(try await p.rowStatus(41) == "try")
            #expect(try await p.count("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()") == 1)
            _ = try await p.call(.xaRollback, 42)
        }
    }

    @Test("a coordinator that never answers is asked once per pass, not once per stale branch")
    func reconcilerWithSilentCoordinator() async throws {
        let silent = try await SilentServer.start()
        try await withCleanup {
            try await ParticipantFixture.with(configure: {
                $0.coordinatorURL = silent.url
                $0.reconciler.staleAfter = .zero
                $0.reconciler.coordinatorTimeout = .milliseconds(300)
            }) { p in
                let workers: [Int64] = [61, 62, 63, 64, 65]
                for worker in workers {
                    let reply = try await p.call(.tccTry, worker)
                    #expect(reply.status == 200)
                }
                func unanswered() async throws -> String? {
                    let metrics = String(decoding: try await p.client.get(p.service.url + "/metrics", timeout: .seconds(5)).body, as: UTF8.self)
                    return metrics.split(separator: "\n").first { $0.hasPrefix("dtx_reconciler_unanswered_total ") }.map(String.init)
                }
                let report = await p.participant.reconciler.runOnce()
                #expect(report.waiting == 5)
                // one ask, which timed out; the other four branches were not asked in this pass
                #expect(try await unanswered() == "dtx_reconciler_unanswered_total 1")
                try await eventually("the silent coordinator accepted the connection") { silent.connections() >= 1 }
                for worker in workers {
                    let status = try await p.rowStatus(worker)
                    #expect(status == "try")
                }
                // the next pass asks again, once
                #expect(await p.participant.reconciler.runOnce().waiting == 5)
                #expect(try await unanswered() == "dtx_reconciler_unanswered_total 2")
                try await eventually("the silent coordinator accepted a second connection") { silent.connections() >= 2 }
            }
        } cleanup: {
            try? await silent.channel.close()
        }
    }

    @Test("bad input gets its status and a JSON error, and the database is unchanged")
    func badInput() async throws {
        try await ParticipantFixture.with { p in
            _ = try await p.call(.tccTry, 50)  // some state to compare against
            let before = try await p.snapshot()
            let json = [("content-type", "application/json")]
            let cases: [(String, String, String, Int, String)] = [
                ("POST", "/tcc/try", #"{"worker_event_id": 1, "product_id": 1, "quantity": 10"#, 400, "bad_request"),
                ("POST", "/tcc/try", #"{"worker_event_id": 1, "product_id": 1}"#, 400, "bad_request"),
                ("POST", "/tcc/try", #"{"worker_event_id": "1", "product_id": 1, "quantity": 10}"#, 400, "bad_request"),
                ("POST", "/saga/reserve", #"{"worker_event_id": 1, "product_id": 1, "quantity": 0}"#, 400, "bad_request"),
                ("POST", "/saga/reserve", #"{"worker_event_id": 1, "product_id": 1, "quantity": -5}"#, 400, "bad_request"),
                ("POST", "/xa/prepare", #"{"worker_event_id": 1, "product_id": 1, "quantity": 1000001}"#, 400, "bad_request"),
                ("POST", "/xa/prepare", #"{"worker_event_id": 1, "product_id": 1, "quantity": 2.5}"#, 400, "bad_request"),
                ("POST", "/tcc/cancel", #"{"worker_event_id": 0, "product_id": 1, "quantity": 1}"#, 400, "bad_request"),
                ("POST", "/tcc/try", #"[1, 2, 3]"#, 400, "bad_request"),
                ("POST", "/tcc/try", #"{"worker_event_id": 1, "product_id": 999, "quantity": 1}"#, 409, "unknown_product"),
                ("POST", "/saga/reserve", #"{"worker_event_id": 1, "product_id": 999, "quantity": 1}"#, 409, "unknown_product"),
                ("POST", "/xa/prepare", #"{"worker_event_id": 1, "product_id": 999, "quantity": 1}"#, 409, "unknown_product"),
                ("GET", "/tcc/try", "", 405, "method_not_allowed"),
                ("PUT", "/xa/commit", "{}", 405, "method_not_allowed"),
                ("POST", "/tcc/status", "{}", 405, "method_not_allowed"),
                ("GET", "/tcc/status?worker_event_id=x&product_id=1", "", 400, "bad_request"),
                ("GET", "/products/999", "", 404, "not_found"),
                ("POST", "/nope", "{}", 404, "not_found"),
            ]
            for (method, path, body, status, code) in cases {
                let reply = try await p.client.raw(method, p.service.url + path, body: body.isEmpty ? nil : Data(body.utf8), headers: json)
                #expect(reply.status == status, "\(method) \(path) \(body)")
                #expect(reply.error?.code.rawValue == code, "\(method) \(path) \(body): \(String(decoding: reply.body, as: UTF8.self))")
            }
            let big = #"{"worker_event_id": 1, "product_id": 1, "quantity": 1, "pad": ""# + String(repeating: "x", count: 70_000) + #""}"#
            let tooLarge = try await p.client.raw("POST", p.service.url + "/tcc/try", body: Data(big.utf8), headers: json)
            #expect(tooLarge.status == 413)
            #expect(tooLarge.error?.code == .bodyTooLarge)
            // headers over the parser's limit: a JSON error too (before, an empty 400), and the service goes on answering
            // (with curl: AsyncHTTPClient traps on an answer that comes before it has sent the whole head)
            let headerFile = "/tmp/dtx-test-\(getpid())-big-header"
            try "x-padding: \(String(repeating: "y", count: 100_000))\n".write(toFile: headerFile, atomically: true, encoding: .utf8)
            let curl = try Command.run([
                "curl", "-s", "-H", "@\(headerFile)", "-H", "content-type: application/json",
                "--data", #"{"worker_event_id": 1, "product_id": 1, "quantity": 1}"#, "-w", "\n%{http_code}", p.service.url + "/tcc/try",
            ])
            let lines = curl.split(separator: "\n")
            #expect(lines.last == "400", "\(curl.prefix(300))")
            let problem = try? WireJSON.decoder().decode(ErrorBody.self, from: Data((lines.first ?? "").utf8))
            #expect(problem?.error.code == .badRequest && problem?.error.message.contains("80 KiB") == true, "\(curl.prefix(300))")
            #expect(try await p.client.get(p.service.url + "/health", timeout: .seconds(5)).status == 200)
            #expect(try await p.snapshot() == before)
        }
    }

    @Test("connections whose server went silent are closed at the call's deadline and replaced: the pool is not lost")
    func silentConnectionsReplaced() async throws {
        try await ParticipantFixture.with(configure: { $0.maxDatabaseConnections = 2; $0.operationTimeout = .seconds(2); $0.lockTimeout = .seconds(1) }) { p in
            // both pooled connections in use once, then their server processes stopped: as a network that drops
            // everything, or a failover that sends no reset, looks to the service
            async let first = p.call(.sagaReserve, 91)
            async let second = p.call(.sagaReserve, 92)
            _ = try await (first, second)
            let pids = try await withDatabase(p.database) { connection in
                var pids: [Int32] = []
                for try await pid in try await connection.query(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                    logger: TestPostgres.logger
                ).decode(Int32.self) { pids.append(pid) }
                return pids
            }
            #expect(!pids.isEmpty)
            try await withCleanup {
                for pid in pids { kill(pid, SIGSTOP) }
                // each call waits out its deadline on a silent connection (503)...
                async let a = p.call(.sagaReserve, 93)
                async let b = p.call(.sagaReserve, 94)
                let (stalledA, stalledB) = try await (a, b)
                #expect(stalledA.status == 503 && stalledB.status == 503, "\(stalledA.status) \(stalledB.status)")
                // ...and gives it up: new connections answer (before, both stayed leased, and every call was 503 until the
                // stopped processes ran again)
                try await eventually("a call on a new connection succeeds", timeout: .seconds(30)) {
                    try await p.call(.sagaReserve, 95).status == 200
                }
            } cleanup: {
                for pid in pids { kill(pid, SIGCONT) }
            }
        }
    }

    @Test("with a token set, calls without it or with a wrong one get 401 and change nothing")
    func token() async throws {
        try await ParticipantFixture.with(configure: { $0.token = "s3cret" }) { p in
            let body = Data(#"{"worker_event_id": 60, "product_id": 1, "quantity": 10}"#.utf8)
            let anonymous = ServiceClient()
            let missing = try await anonymous.raw("POST", p.service.url + "/tcc/try", body: body)
            let wrong = try await anonymous.raw("POST", p.service.url + "/tcc/try", body: body, headers: [("authorization", "Bearer guess")])
            try await anonymous.shutdown()
            #expect(missing.status == 401)
            #expect(missing.error?.code == .unauthorized)
            #expect(missing.header("www-authenticate")?.hasPrefix("Bearer") == true)  // RFC 6750
            #expect(wrong.status == 401)
            #expect(try await p.stock() == 100)
            #expect(try await p.call(.tccTry, 60).status == 200)  // the fixture's client sends the token
            #expect(try await p.stock() == 90)
        }
    }

    @Test("with a token: the scheme in any case, the health check open, the status page's cookie only for reading, bodies only as JSON")
    func tokenEdges() async throws {
        try await ParticipantFixture.with(configure: { $0.token = "s3cret" }) { p in
            let body = Data(#"{"worker_event_id": 61, "product_id": 1, "quantity": 10}"#.utf8)
            let anonymous = ServiceClient()
            defer { Task { try? await anonymous.shutdown() } }
            let url = p.service.url + "/tcc/try"
            // a page of another site can make a browser POST a form or text with the cookie, without asking first:
            // before, both were taken as JSON, and the cookie let them in
            let cookie = try await anonymous.raw("POST", url, body: body, headers: [("cookie", "dtx_token=s3cret"), ("content-type", "application/json")])
            #expect(cookie.status == 401)
            let text = try await anonymous.raw("POST", url, body: body, headers: [("authorization", "Bearer s3cret"), ("content-type", "text/plain")])
            #expect(text.status == 415 && text.error?.code == .unsupportedMediaType, "\(String(decoding: text.body, as: UTF8.self))")
            let form = try await anonymous.raw("POST", url, body: body, headers: [("authorization", "Bearer s3cret"), ("content-type", "application/x-www-form-urlencoded")])
            #expect(form.status == 415)
            #expect(try await p.stock() == 100)
            // the scheme's name in any case (before: 401), JSON with a charset
            let lower = try await anonymous.raw("POST", url, body: body, headers: [("authorization", "bearer s3cret"), ("content-type", "application/json; charset=utf-8")])
            #expect(lower.status == 200, "\(String(decoding: lower.body, as: UTF8.self))")
            #expect(try await p.stock() == 90)
            // the health check needs no token, as the document says (before: 401)
            #expect(try await anonymous.get(p.service.url + "/health", timeout: .seconds(5)).status == 200)
            // HEAD too, as load balancers probe (before: 405), with no body
            let head = try await anonymous.raw("HEAD", p.service.url + "/health", body: nil, headers: [])
            #expect(head.status == 200 && head.body.isEmpty, "\(head.status) \(String(decoding: head.body, as: UTF8.self))")
            #expect(try await anonymous.get(p.service.url + "/metrics", timeout: .seconds(5)).status == 401)
        }
    }

    @Test("on a server with max_prepared_transactions = 0: TCC and Saga work, XA prepare gets 409 xa_unavailable with nothing prepared; health follows the database")
    func xaDisabledAndHealth() async throws {
        var configuration = EmbeddedPostgres.Configuration(directory: "/tmp/dtx-test-noxa-\(getpid())")
        configuration.maxPreparedTransactions = 0
        configuration.durable = false
        configuration.databases = ["dtx_service_a"]
        let cluster = try EmbeddedPostgres(configuration: configuration)
        try cluster.removeWhenProcessExits()
        try await cluster.start(logger: TestPostgres.logger)
        try await withCleanup {
            try await ParticipantFixture.withOwnDatabase(try cluster.url(database: "dtx_service_a")) { p in
                #expect(p.participant.xaEnabled == false)
                #expect(try await p.call(.tccTry, 70).status == 200)
                #expect(try await p.call(.sagaReserve, 71).status == 200)
                let before = try await p.snapshot()
                let xa = try await p.call(.xaPrepare, 72)
                #expect(xa.status == 409)
                #expect(xa.error?.code == .xaUnavailable)
                #expect(xa.error?.message.contains("max_prepared_transactions") == true)
                #expect(try await p.snapshot() == before)
                // a rollback of what was never prepared succeeds: the barrier rows only, so a late prepare does nothing
                let rollback = try await p.call(.xaRollback, 72)
                #expect(rollback.status == 200)
                #expect(rollback.effect == .nullCompensation)
                #expect(try await p.stock() == 80)
                #expect(try await p.client.get(p.service.url + "/health", timeout: .seconds(5)).status == 200)
                try cluster.stop()
                let health = try await p.client.get(p.service.url + "/health", timeout: .seconds(20))
                #expect(health.status == 503)
                #expect(health.error?.code == .databaseUnavailable)
                #expect(try await p.client.raw("HEAD", p.service.url + "/health", body: nil, headers: []).status == 503)
                let during = try await p.client.post(p.service.url + "/tcc/try", json: BranchRequest(workerEventId: 73, productId: 1, quantity: 10), timeout: .seconds(20))
                #expect(during.status == 503)
            }
        } cleanup: {
            try? cluster.destroy()
        }
    }

    @Test("metrics count branch operations by mode, op and outcome")
    func metrics() async throws {
        try await ParticipantFixture.with { p in
            _ = try await p.call(.tccTry, 80)
            _ = try await p.call(.tccTry, 81, quantity: 1000)
            let text = String(decoding: try await p.client.get(p.service.url + "/metrics", timeout: .seconds(5)).body, as: UTF8.self)
            #expect(text.contains(#"dtx_branch_operations_total{mode="tcc",op="try",outcome="applied"} 1"#))
            #expect(text.contains(#"dtx_branch_operations_total{mode="tcc",op="try",outcome="insufficient_stock"} 1"#))
            #expect(text.contains("dtx_branch_duration_seconds_bucket"))
        }
    }
}

extension ParticipantFixture {
    /// Like `with`, on a given database.
    static func withOwnDatabase(_ database: DatabaseURL, _ body: (ParticipantFixture) async throws -> Void) async throws {
        var configuration = participantConfiguration("ServiceA", database)
        configuration.maxDatabaseConnections = 4
        let (service, participant) = try await RunningService.participant(configuration)
        let client = ServiceClient()
        let fixture = ParticipantFixture(database: database, service: service, participant: participant, client: client, configuration: configuration)
        try await withCleanup {
            try await body(fixture)
        } cleanup: {
            await service.stop()
            try? await client.shutdown()
        }
    }
}
