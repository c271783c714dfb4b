import DTXHTTP
import DTXProtocol
import Logging
import PostgresNIO
import Prometheus
import ServiceLifecycle

/// The participant's scheduled job (the documented 5-minute status check, interval configurable):
/// - rows in `confirm_pending` are finalized locally (the coordinator's decision is already known: commit);
/// - rows left in `try` and prepared transactions left in doubt, older than `staleAfter`, ask the coordinator for
///   the outcome and are confirmed or cancelled, committed or rolled back; with no answer they wait for the next run.
public struct Reconciler: Service {
    public struct Configuration: Sendable {
        public var interval: Duration = .seconds(300)
        public var staleAfter: Duration = .seconds(30)
        public var coordinatorTimeout: Duration = .seconds(3)
        public init() {}
    }

    /// What one run did.
    public struct Report: Sendable, Equatable {
        public var finalized = 0
        public var confirmed = 0
        public var cancelled = 0
        public var committed = 0
        public var rolledBack = 0
        /// Stale branches whose outcome is not known yet.
        public var waiting = 0
        public init() {}
    }

    let ledger: StockLedger
    let coordinatorURL: String?
    let client: ServiceClient
    let configuration: Configuration
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: configuration.interval)
                _ = await self.runOnce()
            }
        }
    }

    /// One pass over every leftover state. Errors are logged, never thrown: the next run tries again.
    public func runOnce() async -> Report {
        var report = Report()
        do {
            try await finalizeConfirmPending(&report)
            try await resolveStaleTries(&report)
            try await resolveInDoubt(&report)
        } catch {
            logger.warning("reconciler run stopped early", metadata: ["dtx.error": "\(error)"])
        }
        for (action, count) in [("finalized", report.finalized), ("confirmed", report.confirmed), ("cancelled", report.cancelled),
                                ("committed", report.committed), ("rolled_back", report.rolledBack)] where count > 0 {
            registry.counter("dtx_reconciler_actions_total", [("action", action)]).increment(by: Int64(count))
        }
        if report != Report() {
            logger.info("reconciler run", metadata: [
                "dtx.finalized": "\(report.finalized)", "dtx.confirmed": "\(report.confirmed)", "dtx.cancelled": "\(report.cancelled)",
                "dtx.committed": "\(report.committed)", "dtx.rolled_back": "\(report.rolledBack)", "dtx.waiting": "\(report.waiting)",
            ])
        }
        return report
    }

    private func finalizeConfirmPending(_ report: inout Report) async throws {
        for request in try await rows(status: .confirmPending, olderThan: .zero) {
            _ = try await ledger.perform(.tccFinalize, request.branch)
            report.finalized += 1
        }
    }

    private func resolveStaleTries(_ report: inout Report) async throws {
        for row in try await rows(status: .tried, olderThan: configuration.staleAfter) {
            guard let decision = await decision(for: row.branch.workerEventId) else {
                report.waiting += 1
                continue
            }
            switch (row.mode, decision) {
            case (.tcc, .commit):
                _ = try await ledger.perform(.tccConfirm, row.branch)
                _ = try await ledger.perform(.tccFinalize, row.branch)
                report.confirmed += 1
            case (.tcc, .abort):
                _ = try await ledger.perform(.tccCancel, row.branch)
                report.cancelled += 1
            case (.saga, .commit):
                _ = try await ledger.perform(.sagaConfirm, row.branch)
                report.confirmed += 1
            case (.saga, .abort):
                _ = try await ledger.perform(.sagaCompensate, row.branch)
                report.cancelled += 1
            case (.xa, _):
                continue  // XA rows are written committed; nothing stays in 'try'
            }
        }
    }

    private func resolveInDoubt(_ report: inout Report) async throws {
        for branch in try await ledger.inDoubt(olderThan: configuration.staleAfter) {
            switch await decision(for: branch.workerEventId) {
            case .commit:
                _ = try await ledger.perform(.xaCommit, branch)
                report.committed += 1
            case .abort:
                _ = try await ledger.perform(.xaRollback, branch)
                report.rolledBack += 1
            case nil:
                report.waiting += 1
            }
        }
    }

    private func rows(status: RowStatus, olderThan: Duration) async throws -> [(branch: BranchRequest, mode: Mode)] {
        let rows = try await ledger.client.query(
            """
            SELECT worker_event_id, product_id, quantity, mode FROM transactions
            WHERE status = \(status.rawValue) AND updated_at <= now() - make_interval(secs => \(olderThan.inSeconds))
            ORDER BY updated_at LIMIT 1000
            """,
            logger: logger
        )
        var found: [(BranchRequest, Mode)] = []
        for try await (worker, product, quantity, mode) in rows.decode((Int64, Int64, Int64, String).self) {
            guard let mode = Mode(rawValue: mode) else { continue }
            found.append((BranchRequest(workerEventId: worker, productId: product, quantity: quantity), mode))
        }
        return found
    }

    /// The coordinator's decision for a global transaction; nil when it has none yet or cannot be asked.
    func decision(for workerEventId: Int64) async -> Decision? {
        guard let coordinatorURL else { return nil }
        do {
            let reply = try await client.get("\(coordinatorURL)/v1/transactions/\(workerEventId)", timeout: configuration.coordinatorTimeout)
            guard reply.status == 200 else {
                logger.warning("coordinator has no outcome", metadata: ["dtx.worker_event_id": "\(workerEventId)", "dtx.http_status": "\(reply.status)"])
                return nil
            }
            return try reply.decode(TransactionView.self).decision
        } catch {
            logger.warning("coordinator not reachable", metadata: ["dtx.worker_event_id": "\(workerEventId)", "dtx.error": "\(error)"])
            return nil
        }
    }
}
