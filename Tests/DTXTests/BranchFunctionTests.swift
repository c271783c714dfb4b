import DTXHTTP
import DTXParticipant
import DTXPostgres
import DTXProtocol
import Foundation
import Testing

/// The refusal codes of the participant's branch functions (sql/participant/004), over HTTP, each with the database
/// checked unchanged; and batched second-phase calls.
@Suite("Branch functions: refusal codes and batches")
struct BranchFunctionTests {
    @Test("every refusal of the first phase rolls back whole and says why (DX001-DX003, DX006, DX008, DX009)")
    func firstPhaseRefusals() async throws {
        try await ParticipantFixture.with { p in
            #expect(try await p.call(.tccTry, 1).status == 200)
            let before = try await p.snapshot()
            func expectRefusal(_ op: BranchOperation, _ request: BranchRequest, _ code: ProtocolError.Code, sourceLocation: SourceLocation = #_sourceLocation) async throws {
                let reply = try await p.client.post(p.service.url + op.path, json: request, timeout: .seconds(10))
                #expect(reply.status == 409, sourceLocation: sourceLocation)
                #expect(reply.error?.code == code, "\(String(decoding: reply.body, as: UTF8.self))", sourceLocation: sourceLocation)
                #expect(try await p.snapshot() == before, sourceLocation: sourceLocation)
            }
            for op in [BranchOperation.tccTry, .sagaReserve, .xaPrepare] {
                try await expectRefusal(op, BranchRequest(workerEventId: 2, productId: 1, quantity: 1000), .insufficientStock)
                try await expectRefusal(op, BranchRequest(workerEventId: 2, productId: 999, quantity: 1), .unknownProduct)
                // past its first phase's end: refused, whether or not the branch is new
                try await expectRefusal(op, BranchRequest(workerEventId: 3, productId: 1, quantity: 1, notAfter: "2020-01-01T00:00:00.000Z"), .deadlinePassed)
            }
            // another mode's branch for the same worker_event and product
            try await expectRefusal(.sagaReserve, BranchRequest(workerEventId: 1, productId: 1, quantity: 10), .branchConflict)
            // the same branch again with another quantity: not a duplicate of it (before: 200 duplicate, the row's 10 kept)
            try await expectRefusal(.tccTry, BranchRequest(workerEventId: 1, productId: 1, quantity: 11), .branchConflict)
            // a cancel came first: the late try finds its barrier row taken
            #expect(try await p.call(.tccCancel, 4).effect == .nullCompensation)
            let afterCancel = try await p.snapshot()
            let late = try await p.call(.tccTry, 4)
            #expect(late.status == 409 && late.errorCode == "branch_cancelled")
            #expect(try await p.snapshot() == afterCancel)
            // below the pruned watermark and never seen here: refused (retention), above it: applied
            _ = try await p.count("UPDATE retention_state SET pruned_gid_watermark = 100 RETURNING 1")
            let pruned = try await p.call(.tccTry, 50)
            #expect(pruned.status == 409 && pruned.errorCode == "branch_pruned")
            #expect(try await p.snapshot() == afterCancel)
            #expect(try await p.call(.tccTry, 150).status == 200)
            // a bad time is a 400 that names the field
            let bad = try await p.client.post(p.service.url + "/tcc/try", json: BranchRequest(workerEventId: 5, productId: 1, quantity: 1, notAfter: "tomorrow"), timeout: .seconds(10))
            #expect(bad.status == 400 && bad.error?.message.contains("not_after") == true)
            let impossible = try await p.client.post(p.service.url + "/tcc/try", json: BranchRequest(workerEventId: 5, productId: 1, quantity: 1, notAfter: "2026-13-45T99:00:00Z"), timeout: .seconds(10))
            #expect(impossible.status == 400)
        }
    }

    @Test("second-phase refusals change nothing: not tried, invalid state, cancelled, and undo after the commit point")
    func secondPhaseRefusals() async throws {
        try await ParticipantFixture.with { p in
            // never tried
            for op in [BranchOperation.tccConfirm, .tccFinalize, .sagaConfirm, .xaCommit] {
                let reply = try await p.call(op, 10)
                #expect(reply.status == 409 && reply.errorCode == "branch_not_tried", "\(op)")
            }
            // finalize before confirm
            #expect(try await p.call(.tccTry, 11).status == 200)
            let early = try await p.call(.tccFinalize, 11)
            #expect(early.status == 409 && early.errorCode == "invalid_state")
            #expect(try await p.rowStatus(11) == "try")
            // confirm of a cancelled branch
            #expect(try await p.call(.tccCancel, 11).effect == .applied)
            let confirmCancelled = try await p.call(.tccConfirm, 11)
            #expect(confirmCancelled.status == 409 && confirmCancelled.errorCode == "branch_cancelled")
            // undo after the commit point, per mode: 409 branch_confirmed, stock and row unchanged
            #expect(try await p.call(.tccTry, 12).status == 200)
            #expect(try await p.call(.tccConfirm, 12).status == 200)
            #expect(try await p.call(.sagaReserve, 13).status == 200)
            #expect(try await p.call(.sagaConfirm, 13).status == 200)
            #expect(try await p.call(.xaPrepare, 14).status == 200)
            #expect(try await p.call(.xaCommit, 14).status == 200)
            let before = try await p.snapshot()
            for (op, worker) in [(BranchOperation.tccCancel, Int64(12)), (.sagaCompensate, 13), (.xaRollback, 14)] {
                let reply = try await p.call(op, worker)
                #expect(reply.status == 409, "\(op)")
                #expect(reply.errorCode == "branch_confirmed", "\(op)")
            }
            #expect(try await p.snapshot() == before)
            #expect(try await p.rowStatus(12) == "confirm_pending")
            #expect(try await p.rowStatus(13) == "confirm")
        }
    }

    @Test("a second phase of another mode than its branch's is refused (branch_conflict) and writes nothing, alone and batched")
    func secondPhaseOfAnotherMode() async throws {
        try await ParticipantFixture.with { p in
            #expect(try await p.call(.sagaReserve, 30).status == 200)
            #expect(try await p.call(.tccTry, 31).status == 200)
            let before = try await p.snapshot()
            // before sql/participant/010: the TCC confirm moved the Saga's row to confirm_pending (the reconciler then
            // finalized it), and the Saga could neither confirm nor compensate it
            for op in [BranchOperation.tccConfirm, .tccFinalize, .tccCancel] {
                let reply = try await p.call(op, 30)
                #expect(reply.status == 409 && reply.errorCode == "branch_conflict", "\(op): \(String(decoding: reply.body, as: UTF8.self))")
            }
            for op in [BranchOperation.sagaConfirm, .sagaCompensate] {
                let reply = try await p.call(op, 31)
                #expect(reply.status == 409 && reply.errorCode == "branch_conflict", "\(op)")
            }
            // and XA's (sql/participant/012; before: rollback answered null_compensation with two barrier rows written, the
            // try keeping its stock, and commit of a confirmed Saga branch answered duplicate)
            for (op, worker) in [(BranchOperation.xaRollback, Int64(31)), (.xaCommit, 30), (.xaRollback, 30), (.xaCommit, 31)] {
                let reply = try await p.call(op, worker)
                #expect(reply.status == 409 && reply.errorCode == "branch_conflict", "\(op) \(worker): \(String(decoding: reply.body, as: UTF8.self))")
            }
            let merged = try await p.client.post(
                p.service.url + "/tcc/confirm?finalize=true", json: [BranchRequest(workerEventId: 30, productId: 1, quantity: 10)], timeout: .seconds(10)
            )
            #expect(String(decoding: merged.body, as: UTF8.self).contains("branch_conflict"))
            #expect(try await p.snapshot() == before)
            #expect(try await p.rowStatus(30) == "try")
            #expect(try await p.count("SELECT count(*) FROM barrier WHERE gid IN (30, 31)") == 2)  // the two first phases' rows only
            // each branch's own mode still moves it; in one batch with a refused item, the other is applied
            let batch = try await p.client.post(p.service.url + "/tcc/confirm", json: [
                BranchRequest(workerEventId: 30, productId: 1, quantity: 10), BranchRequest(workerEventId: 31, productId: 1, quantity: 10),
            ], timeout: .seconds(10))
            let items = try batch.decode([BranchBatchItem].self)
            #expect(items.map(\.httpStatus) == [409, 200])
            #expect(try await p.call(.sagaCompensate, 30).effect == .applied)
            #expect(try await p.stock() == 90)
        }
    }

    @Test("XA: a repeated prepare while prepared, and after the commit, is a duplicate (DX010, DX011)")
    func xaDuplicates() async throws {
        try await ParticipantFixture.with { p in
            #expect(try await p.call(.xaPrepare, 20).effect == .applied)
            let whilePrepared = try await p.call(.xaPrepare, 20)
            #expect(whilePrepared.status == 200 && whilePrepared.effect == .duplicate)
            #expect(try await p.call(.xaCommit, 20).effect == .applied)
            let afterCommit = try await p.call(.xaPrepare, 20)
            #expect(afterCommit.status == 200 && afterCommit.effect == .duplicate)
            #expect(try afterCommit.decode(BranchResponse.self).status == .confirmed)
            #expect(try await p.call(.xaCommit, 20).effect == .duplicate)
            #expect(try await p.stock() == 90)
            #expect(try await p.count("SELECT count(*) FROM open_branches") == 0)
        }
    }

    @Test("a batch answers each item as it would alone: applied, duplicate and refused side by side; a malformed item is a 400")
    func batchMixed() async throws {
        try await ParticipantFixture.with { p in
            for worker: Int64 in [30, 31, 32] { #expect(try await p.call(.tccTry, worker).status == 200) }
            #expect(try await p.call(.tccConfirm, 31).status == 200)
            let items = [30, 31, 33, 32].map { BranchRequest(workerEventId: $0, productId: 1, quantity: 10) }
            let reply = try await p.client.post(p.service.url + "/tcc/confirm", json: items, timeout: .seconds(10))
            #expect(reply.status == 200)
            let answers = try reply.decode([BranchBatchItem].self)
            #expect(answers.map(\.workerEventId) == [30, 31, 33, 32])
            #expect(answers.map(\.httpStatus) == [200, 200, 409, 200])
            #expect(answers.map { $0.result?.effect } == [.applied, .duplicate, nil, .applied])
            #expect(answers[2].error?.code == .branchNotTried)
            for worker: Int64 in [30, 31, 32] { #expect(try await p.rowStatus(worker) == "confirm_pending") }
            // a batch of undos: one applied, one a duplicate, one refused after the commit point
            #expect(try await p.call(.tccTry, 34).status == 200)
            #expect(try await p.call(.tccTry, 35).status == 200)
            #expect(try await p.call(.tccCancel, 35).status == 200)
            let stock = try await p.stock()
            let undo = try await p.client.post(p.service.url + "/tcc/cancel", json: [34, 35, 30].map { BranchRequest(workerEventId: $0, productId: 1, quantity: 10) }, timeout: .seconds(10))
            let undone = try undo.decode([BranchBatchItem].self)
            #expect(undone.map(\.httpStatus) == [200, 200, 409])
            #expect(undone.map { $0.result?.effect } == [.applied, .duplicate, nil])
            #expect(undone[2].error?.code == .branchConfirmed)
            #expect(try await p.stock() == stock + 10)
            // arrays are for the second phase only; an invalid item is refused alone
            let first = try await p.client.post(p.service.url + "/tcc/try", json: [BranchRequest(workerEventId: 36, productId: 1, quantity: 1)], timeout: .seconds(10))
            #expect(first.status == 400)
            let mixed = try await p.client.raw("POST", p.service.url + "/tcc/finalize", body: Data(#"[{"worker_event_id": 30, "product_id": 1, "quantity": 10}, {"worker_event_id": 0, "product_id": 1, "quantity": 10}]"#.utf8), headers: [("content-type", "application/json")])
            #expect(mixed.status == 400 && mixed.error?.message.contains("item [1]") == true, "a malformed item makes the batch malformed")
            #expect(try await p.client.post(p.service.url + "/tcc/confirm", json: [BranchRequest](), timeout: .seconds(10)).status == 400)
        }
    }

    @Test("TCC confirm with finalize=true: both steps and both barrier rows in one call, answers in item order, refusals unchanged")
    func confirmAndFinalize() async throws {
        try await ParticipantFixture.with { p in
            for worker: Int64 in [60, 61, 62, 63, 64] { #expect(try await p.call(.tccTry, worker).status == 200) }
            #expect(try await p.call(.tccConfirm, 61).status == 200)  // confirm_pending already: only finalized now
            #expect(try await p.call(.tccCancel, 63).status == 200)  // cancelled: refused
            let stock = try await p.stock()
            let items = [65, 60, 61, 63, 62].map { BranchRequest(workerEventId: $0, productId: 1, quantity: 10) }
            let reply = try await p.client.post(p.service.url + "/tcc/confirm?finalize=true", json: items, timeout: .seconds(10))
            #expect(reply.status == 200)
            let answers = try reply.decode([BranchBatchItem].self)
            // each answer in its request's place
            #expect(answers.map(\.workerEventId) == [65, 60, 61, 63, 62])
            #expect(answers.map(\.httpStatus) == [409, 200, 200, 409, 200])
            #expect(answers[0].error?.code == .branchNotTried)
            #expect(answers[3].error?.code == .branchCancelled)
            #expect(answers.compactMap { $0.result?.status } == [.confirmed, .confirmed, .confirmed])
            for worker: Int64 in [60, 61, 62] {
                #expect(try await p.rowStatus(worker) == "confirm")
                #expect(try await p.count("SELECT count(*) FROM barrier WHERE gid = \(worker) AND op IN ('confirm', 'finalize')") == 2)
                // each step again, alone: a duplicate, nothing changed
                #expect(try await p.call(.tccConfirm, worker).effect == .duplicate)
                #expect(try await p.call(.tccFinalize, worker).effect == .duplicate)
            }
            #expect(try await p.rowStatus(63) == "cancel")
            #expect(try await p.stock() == stock, "confirm and finalize move no stock")
            // a single call does the same
            let single = try await p.client.post(p.service.url + "/tcc/confirm?finalize=true", json: BranchRequest(workerEventId: 64, productId: 1, quantity: 10), timeout: .seconds(10))
            #expect(try single.decode(BranchResponse.self).status == .confirmed)
            #expect(try await p.call(.tccCancel, 64).errorCode == "branch_confirmed")
            // only TCC confirm takes it, and only true or false
            for (path, status) in [("/tcc/finalize?finalize=true", 400), ("/saga/confirm?finalize=true", 400), ("/tcc/confirm?finalize=yes", 400), ("/tcc/confirm?finalize=false", 200)] {
                let answer = try await p.client.post(p.service.url + path, json: [BranchRequest(workerEventId: 60, productId: 1, quantity: 10)], timeout: .seconds(10))
                #expect(answer.status == status, "\(path)")
            }
        }
    }

    @Test(
        "batch items whose rows another transaction holds wait alone, together; the others do not fail with them",
        arguments: [("/saga/confirm", false), ("/tcc/confirm?finalize=true", true)]
    )
    func batchBusyItem(path: String, tcc: Bool) async throws {
        // six busy items one after the other would wait 6 x 500 ms, past the 2.5 s a database call may take here: the
        // whole batch was then a 503, the item that was done included
        try await ParticipantFixture.with(configure: { $0.operationTimeout = .milliseconds(2500) }) { p in
            let busy: [Int64] = [41, 42, 43, 44, 45, 46]
            for worker in [40] + busy { #expect(try await p.call(tcc ? .tccTry : .sagaReserve, worker).status == 200) }
            // hold the busy items' rows in an open transaction longer than the participant's lock timeout (500 ms)
            let reply = try await withDatabase(p.database) { connection in
                try await connection.query("BEGIN", logger: TestPostgres.logger)
                try await connection.query("SELECT 1 FROM transactions WHERE worker_event_id IN (41, 42, 43, 44, 45, 46) FOR UPDATE", logger: TestPostgres.logger)
                let items = ([40] + busy).map { BranchRequest(workerEventId: $0, productId: 1, quantity: 10) }
                let reply = try await p.client.post(p.service.url + path, json: items, timeout: .seconds(10))
                try await connection.query("ROLLBACK", logger: TestPostgres.logger)
                return reply
            }
            #expect(reply.status == 200, "\(String(decoding: reply.body, as: UTF8.self))")
            let answers = try reply.decode([BranchBatchItem].self)
            #expect(answers.map(\.httpStatus) == [200] + busy.map { _ in 503 })
            // the lock timeout, or on a loaded machine the call's own bound: each item answers for itself
            #expect(answers.dropFirst().allSatisfy { [.lockTimeout, .databaseUnavailable].contains($0.error?.code) })
            #expect(try await p.rowStatus(40) == "confirm")
            for worker in busy { #expect(try await p.rowStatus(worker) == "try") }
            // retried, as the coordinator does: applied
            if tcc {
                let retried = try await p.client.post(p.service.url + path, json: [BranchRequest(workerEventId: 41, productId: 1, quantity: 10)], timeout: .seconds(10))
                #expect(try retried.decode([BranchBatchItem].self).map(\.httpStatus) == [200])
                #expect(try await p.count("SELECT count(*) FROM barrier WHERE gid = 41 AND op IN ('confirm', 'finalize')") == 2)
            } else {
                #expect(try await p.call(.sagaConfirm, 41).effect == .applied)
            }
            #expect(try await p.rowStatus(41) == "confirm")
        }
    }

    @Test("XA commits and rollbacks in one batch")
    func xaBatch() async throws {
        try await ParticipantFixture.with { p in
            // two products: a prepared transaction holds its product's row lock until it is resolved
            #expect(try await p.call(.xaPrepare, 50, product: 1).status == 200)
            #expect(try await p.call(.xaPrepare, 51, product: 2).status == 200)
            let items = [(50, 1), (51, 2), (52, 1)].map { BranchRequest(workerEventId: Int64($0.0), productId: Int64($0.1), quantity: 10) }
            let reply = try await p.client.post(p.service.url + "/xa/commit", json: items, timeout: .seconds(10))
            #expect(try reply.decode([BranchBatchItem].self).map(\.httpStatus) == [200, 200, 409])
            #expect(try await p.stock(1) == 90)
            #expect(try await p.stock(2) == 190)
            #expect(try await p.count("SELECT count(*) FROM open_branches") == 0)
        }
    }
}
