import DTXHTTP
@testable import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import Testing

@Suite("Participant branches over HTTP")
struct ParticipantTests {
    @Test("happy path: origin, then forward steps; stock taken once, row confirm", arguments: ModeOps.all)
    func happyPath(ops: ModeOps) async throws {
        try await ParticipantFixture.with { p in
            let origin = try await p.call(ops.origin, 7)
            #expect(origin.status == 200)
            #expect(origin.effect == .applied)
            if ops.mode == .xa {
                // prepared, not committed: nothing visible yet
                #expect(try await p.stock() == 100)
                #expect(try await p.rowStatus(7) == nil)
            } else {
                #expect(try await p.stock() == 90)
                #expect(try await p.rowStatus(7) == "try")
            }
            for op in ops.forward {
                let reply = try await p.call(op, 7)
                #expect(reply.status == 200, "\(op)")
            }
            #expect(try await p.stock() == 90)
            #expect(try await p.rowStatus(7) == "confirm")
            #expect(try await p.count("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()") == 0)
        }
    }

    @Test("TCC rows pass through confirm_pending", arguments: [ModeOps.all[0]])
    func tccConfirmPending(ops: ModeOps) async throws {
        try await ParticipantFixture.with { p in
            #expect(try await p.call(.tccTry, 8).status == 200)
            #expect(try await p.call(.tccConfirm, 8).status == 200)
            #expect(try await p.rowStatus(8) == "confirm_pending")
            let status = try await p.client.get(p.service.url + "/tcc/status?worker_event_id=8&product_id=1", timeout: .seconds(5))
            #expect(try status.decode(BranchStatus.self).status == .confirmPending)
            #expect(try await p.call(.tccFinalize, 8).status == 200)
            #expect(try await p.rowStatus(8) == "confirm")
        }
    }

    @Test("refusal on stock: 409 insufficient_stock, nothing changed", arguments: ModeOps.all)
    func refusalOnStock(ops: ModeOps) async throws {
        try await ParticipantFixture.with { p in
            let before = try await p.snapshot()
            let reply = try await p.call(ops.origin, 9, quantity: 101)
            #expect(reply.status == 409)
            #expect(reply.errorCode == "insufficient_stock")
            #expect(try await p.snapshot() == before)
            // the undo that follows a refusal is a null compensation, and changes no stock
            let undo = try await p.call(ops.undo, 9, quantity: 101)
            #expect(undo.status == 200)
            #expect(undo.effect == .nullCompensation)
            #expect(try await p.stock() == 100)
        }
    }

    @Test("refusals never keep a pooled connection: 300 refused tries, 8 at a time, on a pool of 2, then a try succeeds")
    func refusalsReleaseConnections() async throws {
        // PostgresNIO 1.33's PostgresClient.execute could leave a connection leased for ever when the statement failed
        // before the caller read its rows (as a refusal raised by dtx_first_phase); a pool of 2 then ran dry
        try await ParticipantFixture.with(configure: { $0.maxDatabaseConnections = 2 }) { p in
            let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
                for lane in 0..<8 {
                    group.addTask {
                        var statuses: [Int] = []
                        for index in 0..<38 {
                            statuses.append(try await p.call(.tccTry, Int64(1_000 + lane * 100 + index), quantity: 101).status)
                        }
                        return statuses
                    }
                }
                return try await group.reduce(into: [Int]()) { $0 += $1 }
            }
            #expect(statuses.count == 304)
            #expect(statuses.allSatisfy { $0 == 409 }, "\(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
            let ok = try await p.call(.tccTry, 5_000)
            #expect(ok.status == 200)
            #expect(try await p.stock() == 90)
        }
    }

    @Test("a repeat of every operation changes stock once", arguments: ModeOps.all)
    func repeatsAreIdempotent(ops: ModeOps) async throws {
        try await ParticipantFixture.with { p in
            for op in [ops.origin] + ops.forward {
                #expect(try await p.call(op, 11).status == 200)
                let again = try await p.call(op, 11)
                #expect(again.status == 200, "repeat of \(op)")
                #expect(again.effect == .duplicate, "repeat of \(op)")
            }
            #expect(try await p.stock() == 90)
            // and an undo path, repeated: stock back once
            #expect(try await p.call(ops.origin, 12).status == 200)
            #expect(try await p.call(ops.origin, 12).status == 200)
            #expect(try await p.call(ops.undo, 12).effect == .applied)
            #expect(try await p.call(ops.undo, 12).effect == .duplicate)
            #expect(try await p.stock() == 90)
        }
    }

    @Test("undo before origin: null compensation, the late origin does nothing", arguments: ModeOps.all)
    func undoBeforeOrigin(ops: ModeOps) async throws {
        try await ParticipantFixture.with { p in
            let undo = try await p.call(ops.undo, 13)
            #expect(undo.status == 200)
            #expect(undo.effect == .nullCompensation)
            let late = try await p.call(ops.origin, 13)
            #expect(late.status == 409)
            #expect(late.errorCode == "branch_cancelled")
            #expect(try await p.stock() == 100)
            #expect(try await p.rowStatus(13) == nil)
            #expect(try await p.count("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()") == 0)
        }
    }

    @Test("origin and undo sent at the same moment, 40 times: stock always back to where it was", arguments: ModeOps.all)
    func originAndUndoRace(ops: ModeOps) async throws {
        try await ParticipantFixture.with { p in
            for worker in Int64(100)..<140 {
                async let origin = p.call(ops.origin, worker, quantity: 3)
                async let undo = p.callUntilAnswered(ops.undo, worker, quantity: 3)
                let (o, u) = try await (origin, undo)
                #expect([200, 409, 503].contains(o.status))
                #expect(u.status == 200)
                // an XA prepare that lost the race to its rollback's ROLLBACK PREPARED but won its barrier row stays
                // prepared until the rollback is retried: the coordinator retries until success, so do we
                _ = try await p.callUntilAnswered(ops.undo, worker, quantity: 3)
            }
            #expect(try await p.stock() == 100)
            #expect(try await p.count("SELECT count(*) FROM transactions WHERE status IN ('try', 'confirm_pending', 'confirm')") == 0)
            #expect(try await p.count("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()") == 0)
        }
    }

    @Test("100 concurrent tries on stock for 60: exactly 60 succeed, stock ends at 0")
    func concurrentTries() async throws {
        try await ParticipantFixture.with { p in
            try await p.setStock(1, 60)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for worker in Int64(1000)..<1100 {
                    // a 503 (row lock not granted in time) is retried, as the coordinator does
                    group.addTask { try await p.callUntilAnswered(.tccTry, worker, quantity: 1).status }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 200 }.count == 60)
            #expect(statuses.filter { $0 == 409 }.count == 40)
            #expect(try await p.stock() == 0)
            #expect(try await p.count("SELECT count(*) FROM transactions WHERE status = 'try'") == 60)
        }
    }

    @Test("a malformed branch request adds no coordinator to ask; a valid one, single or batched, does")
    func coordinatorNotedWhenValid() async throws {
        try await ParticipantFixture.with { p in
            let requests: [(path: String, body: String, coordinator: String, status: Int)] = [
                // before, each of these was answered 400 and still wrote its URL into `coordinators`, whose word the
                // reconciler takes about an in-doubt XA branch when no --coordinator is given
                ("/xa/prepare", #"{"worker_event_id": 0, "product_id": 1, "quantity": 1}"#, "http://bad-1:1", 400),
                ("/tcc/confirm", #"[{"worker_event_id": 1, "product_id": 1, "quantity": -1}]"#, "http://bad-2:1", 400),
                ("/tcc/try?finalize=true", #"{"worker_event_id": 1, "product_id": 1, "quantity": 1}"#, "http://bad-3:1", 400),
                ("/tcc/try", #"{"worker_event_id": 1, "product_id": 1, "quantity": 1}"#, "http://good-1:1", 200),
                ("/tcc/confirm", #"[{"worker_event_id": 1, "product_id": 1, "quantity": 1}]"#, "http://good-2:1", 200),
            ]
            for request in requests {
                let reply = try await p.client.raw(
                    "POST", p.service.url + request.path, body: Data(request.body.utf8),
                    headers: [("content-type", "application/json"), (CoordinatorHeader.name, request.coordinator)]
                )
                #expect(reply.status == request.status, "\(request.path): \(String(decoding: reply.body, as: UTF8.self))")
            }
            let noted = try await p.count("SELECT count(*) FROM coordinators WHERE url LIKE 'http://good-%'")
            let malformed = try await p.count("SELECT count(*) FROM coordinators WHERE url LIKE 'http://bad-%'")
            #expect(noted == 2)
            #expect(malformed == 0)
        }
    }

    @Test("a coordinator that keeps calling stays among the ten most recent the reconciler asks")
    func knownCoordinatorsStayRecent() async throws {
        try await ParticipantFixture.with { p in
            try await PostgresClientRunner(url: p.database).run { client in
                let known = KnownCoordinators(client: client, configured: nil, refresh: .milliseconds(200), logger: TestPostgres.logger)
                await known.note("http://steady:1")
                for index in 0..<10 { await known.note("http://once-\(index):1") }
                try await Task.sleep(for: .milliseconds(300))  // past the refresh: the next call from it is written again
                await known.note("http://steady:1")
                // before, only a process's first call from a URL was written: the steady one was the 11th, and dropped
                let asked = await known.known()
                #expect(asked.first == "http://steady:1", "\(asked)")
                // what it keeps in memory is bounded: URLs past their refresh are forgotten (before, it only grew)
                try await Task.sleep(for: .milliseconds(300))
                for index in 0..<(KnownCoordinators.rememberedURLs + 10) { await known.note("http://many-\(index):1") }
                #expect(known.rememberedCount <= KnownCoordinators.rememberedURLs + 10)
                #expect(known.rememberedCount > 0)
            }
        }
    }

    @Test("an undo whose not_after has an offset past 15:59 or the year 0 (RFC 3339 allows both; PostgreSQL reads neither as text) is answered, alone and batched")
    func undoWithOddNotAfter() async throws {
        try await ParticipantFixture.with { p in
            var worker: Int64 = 400
            for notAfter in ["2026-01-31T12:00:00+20:00", "0000-06-01T00:00:00Z"] {
                for op in [BranchOperation.tccCancel, .sagaCompensate, .xaRollback] {
                    worker += 1
                    // before, the text went to dtx_undo as it came: the statement failed, and the answer was a 503 for ever
                    let request = BranchRequest(workerEventId: worker, productId: 1, quantity: 1, notAfter: notAfter)
                    let single = try await p.client.post(p.service.url + op.path, json: request, timeout: .seconds(10))
                    #expect(single.status == 200 && single.effect == .nullCompensation, "\(op) \(notAfter): \(String(decoding: single.body, as: UTF8.self))")
                    guard op != .xaRollback else { continue }
                    worker += 1
                    let batch = try await p.client.post(
                        p.service.url + op.path, json: [BranchRequest(workerEventId: worker, productId: 1, quantity: 1, notAfter: notAfter)], timeout: .seconds(10)
                    )
                    #expect(batch.status == 200, "\(op) \(notAfter), batched: \(String(decoding: batch.body, as: UTF8.self))")
                }
            }
            #expect(try await p.stock() == 100)
        }
    }
}
