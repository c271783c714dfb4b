import DTXBench
import DTXPostgres
import DTXProtocol
import Foundation
import Testing

@Suite("dtx verify")
struct VerifierTests {
    @Test("holds after real transactions, and names each thing broken on purpose")
    func brokenOnPurpose() async throws {
        try await CoordinatorFixture.with { f in
            for mode in Mode.allCases {
                #expect(try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 10)).status == 200)
                #expect(try await f.post(TransactionRequest(mode: mode, productId: 1, quantity: 500)).status == 409)
            }
            let verifier = Verifier(
                coordinator: f.coordinatorDatabase,
                participants: [.init(name: "ServiceA", database: f.serviceA.database), .init(name: "ServiceB", database: f.serviceB.database)],
                logger: TestPostgres.logger
            )
            #expect(try await verifier.check().isEmpty)
            // a participant left out (or misspelt): said, not passed over (before, its rows went unchecked)
            var partial = verifier
            partial.participants = [.init(name: "ServiceA", database: f.serviceA.database), .init(name: "serviceB", database: f.serviceB.database)]
            let unchecked = try await partial.check().map(\.description)
            #expect(unchecked.contains { $0.contains("the log names participant 'ServiceB'") }, "\(unchecked)")

            // stock changed behind the system's back
            _ = try await scalar(f.serviceB.database, "UPDATE products SET stock = stock - 1 WHERE id = 1 RETURNING stock")
            // a completed transaction's branch flipped to cancel at ServiceA (the first one: tcc, completed)
            let first = try await scalar(f.serviceA.database, "SELECT min(worker_event_id) FROM transactions")
            _ = try await scalar(f.serviceA.database, "UPDATE transactions SET status = 'cancel' WHERE worker_event_id = \(first) RETURNING id")
            // a Saga left failed at the coordinator (next attempt pushed out, or the running coordinator's recovery loop
            // would compensate it again before the check)
            _ = try await scalar(f.coordinatorDatabase, "UPDATE worker_events SET status = 'failed', next_retry_at = now() + interval '1 hour' WHERE mode = 'saga' AND status = 'compensated' RETURNING id")
            let violations = try await verifier.check().map(\.description)
            #expect(violations.contains { $0.hasPrefix("ServiceB, product 1: stock is 69") }, "\(violations)")
            #expect(violations.contains { $0.contains("ServiceA, worker_event \(first), product 1: transaction completed but branch is cancel") }, "\(violations)")
            #expect(violations.contains { $0.contains("Saga left failed") }, "\(violations)")
        }
    }
}
