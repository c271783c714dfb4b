import DTXHTTP
import DTXPostgres
import DTXProtocol
import Foundation
import Logging
import PostgresNIO
import Prometheus
import ServiceLifecycle

/// The participant's scheduled job (the documented 5-minute status check, interval configurable), in this order:
/// 1. prepared transactions left in doubt (they hold row locks that the rest may wait for) ask the coordinator and
///    are committed or rolled back;
/// 2. rows in `confirm_pending` are finalized locally (the coordinator's decision is known: commit);
/// 3. rows left in `try` past `staleAfter` ask the coordinator and are confirmed or cancelled.
///
/// Every stale row is visited, page by page; an error on one row is logged and counted
/// (`dtx_reconciler_errors_total`) and the pass goes on with the next. Whom to ask comes from the row itself (the
/// coordinator that called), else `--coordinator`, else every coordinator that has called: a branch never waits for
/// ever because a flag was left out. A coordinator that answers 404 `unknown_transaction` never logged that
/// transaction (its first record was lost in a crash of its database): presumed abort. A coordinator that does not
/// answer (unreachable, or silent past `coordinatorTimeout`) is not asked again in the same pass: its other branches
/// wait for the next one, so a pass over many branches of a coordinator cut off by the network takes one timeout,
/// not one per branch.
public struct Reconciler: Service {
    public struct Configuration: Sendable {
        public var interval: Duration = .seconds(300)
        public var staleAfter: Duration = .seconds(30)
        public var coordinatorTimeout: Duration = .seconds(3)
        /// Rows read per query while paging through the stale ones.
        public var pageSize = 500
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
        /// Rows whose resolution failed this run (logged; tried again next run).
        public var errors = 0
        public init() {}
    }

    let ledger: StockLedger
    let coordinators: KnownCoordinators
    let client: ServiceClient
    let configuration: Configuration
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while await pause(for: configuration.interval) {
                _ = await self.runOnce()
            }
        }
    }

    /// What one pass has found out so far: its report, and the coordinators that did not answer.
    struct Pass {
        var report = Report()
        /// Not asked again in this pass.
        var unanswered: Set<String> = []
        /// The coordinators that have called, read once per pass.
        var known: [String]?
    }

    /// One pass over every leftover state. Errors are logged and counted, never thrown: the next run tries again.
    public func runOnce() async -> Report {
        var pass = Pass()
        await resolveInDoubt(&pass)
        await page(status: .confirmPending, olderThan: .zero, &pass) { row, pass in
            _ = try await ledger.perform(.tccFinalize, row.branch)
            pass.report.finalized += 1
        }
        await page(status: .tried, olderThan: configuration.staleAfter, &pass) { row, pass in
            try await resolveStaleTry(row, &pass)
        }
        let report = pass.report
        for (action, count) in [("finalized", report.finalized), ("confirmed", report.confirmed), ("cancelled", report.cancelled),
                                ("committed", report.committed), ("rolled_back", report.rolledBack)] where count > 0 {
            registry.counter("dtx_reconciler_actions_total", [("action", action)]).increment(by: Int64(count))
        }
        if report.errors > 0 { registry.counter("dtx_reconciler_errors_total").increment(by: Int64(report.errors)) }
        if report != Report() {
            logger.info("reconciler run", metadata: [
                "dtx.finalized": "\(report.finalized)", "dtx.confirmed": "\(report.confirmed)", "dtx.cancelled": "\(report.cancelled)",
                "dtx.committed": "\(report.committed)", "dtx.rolled_back": "\(report.rolledBack)", "dtx.waiting": "\(report.waiting)",
                "dtx.errors": "\(report.errors)",
            ])
        }
        return report
    }

    /// A branch row the reconciler may have to move.
    struct Row: Sendable {
        var id: Int64
        var branch: BranchRequest
        var mode: Mode
        var coordinator: String?
        var updatedAt: Date
    }

    private func resolveInDoubt(_ pass: inout Pass) async {
        let branches: [BranchRequest]
        do {
            branches = try await ledger.inDoubt(olderThan: configuration.staleAfter)
        } catch {
            failed("in-doubt prepared transactions", error, &pass.report)
            return
        }
        for branch in branches {
            do {
                switch await decision(for: branch.workerEventId, stored: nil, &pass) {
                case .commit:
                    _ = try await ledger.perform(.xaCommit, branch)
                    pass.report.committed += 1
                case .abort:
                    _ = try await ledger.perform(.xaRollback, branch)
                    pass.report.rolledBack += 1
                case nil:
                    pass.report.waiting += 1
                }
            } catch {
                failed("worker_event \(branch.workerEventId)", error, &pass.report)
            }
        }
    }

    private func resolveStaleTry(_ row: Row, _ pass: inout Pass) async throws {
        guard let decision = await decision(for: row.branch.workerEventId, stored: row.coordinator, &pass) else {
            pass.report.waiting += 1
            return
        }
        switch (row.mode, decision) {
        case (.tcc, .commit):
            _ = try await ledger.perform(.tccConfirm, row.branch)
            _ = try await ledger.perform(.tccFinalize, row.branch)
            pass.report.confirmed += 1
        case (.tcc, .abort):
            _ = try await ledger.perform(.tccCancel, row.branch)
            pass.report.cancelled += 1
        case (.saga, .commit):
            _ = try await ledger.perform(.sagaConfirm, row.branch)
            pass.report.confirmed += 1
        case (.saga, .abort):
            _ = try await ledger.perform(.sagaCompensate, row.branch)
            pass.report.cancelled += 1
        case (.xa, _):
            break  // XA rows are written committed; nothing stays in 'try'
        }
    }

    /// Visits every row in `status` not updated for `olderThan`, oldest first, a page at a time; `body` runs per row,
    /// and a row it fails on is logged and counted.
    private func page(
        status: RowStatus, olderThan: Duration, _ pass: inout Pass, _ body: (Row, inout Pass) async throws -> Void
    ) async {
        var after: (Date, Int64)?
        while true {
            let rows: [Row]
            do {
                rows = try await self.rows(status: status, olderThan: olderThan, after: after)
            } catch {
                failed("reading rows in \(status.rawValue)", error, &pass.report)
                return
            }
            for row in rows {
                do {
                    try await body(row, &pass)
                } catch {
                    failed("worker_event \(row.branch.workerEventId)", error, &pass.report)
                }
            }
            guard rows.count == configuration.pageSize, let last = rows.last else { return }
            after = (last.updatedAt, last.id)
        }
    }

    private func rows(status: RowStatus, olderThan: Duration, after: (Date, Int64)?) async throws -> [Row] {
        try await ledger.bounded { try await self.rowsNow(status: status, olderThan: olderThan, after: after) }
    }

    private func rowsNow(status: RowStatus, olderThan: Duration, after: (Date, Int64)?) async throws -> [Row] {
        let cursorTime = after?.0 ?? Date.distantPast
        let cursorID = after?.1 ?? 0
        let rows = try await ledger.client.rows(
            """
            SELECT id, worker_event_id, product_id, quantity, mode, coordinator_url, updated_at FROM transactions
            WHERE status = \(status.rawValue) AND updated_at <= now() - make_interval(secs => \(olderThan.inSeconds))
              AND (updated_at, id) > (\(cursorTime), \(cursorID))
            ORDER BY updated_at, id LIMIT \(configuration.pageSize)
            """,
            logger: logger
        )
        var found: [Row] = []
        for row in rows {
            let (id, worker, product, quantity, mode, coordinator, updatedAt) = try row.decode((Int64, Int64, Int64, Int64, String, String?, Date).self)
            guard let mode = Mode(rawValue: mode) else { continue }
            found.append(Row(
                id: id, branch: BranchRequest(workerEventId: worker, productId: product, quantity: quantity), mode: mode,
                coordinator: coordinator, updatedAt: updatedAt
            ))
        }
        return found
    }

    private func failed(_ what: String, _ error: any Error, _ report: inout Report) {
        report.errors += 1
        logger.warning("reconciler could not resolve a branch: next run tries again", metadata: ["dtx.what": "\(what)", "dtx.error": "\(error.logDescription)"])
    }

    /// The coordinators' decision for a global transaction, asking each candidate until one knows; nil when none has
    /// decided yet or none can be asked. A coordinator that does not answer is left out for the rest of the pass.
    ///
    /// "Never logged" (presumed abort) is taken only from the branch's owner: the coordinator stored with it, else the
    /// configured one, else any. Any coordinator that ever called may say it does not know an id, and one with another
    /// database (another installation, a staging coordinator) says so of ids it did not hand out.
    func decision(for workerEventId: Int64, stored: String?, _ pass: inout Pass) async -> Decision? {
        if pass.known == nil { pass.known = await coordinators.known() }
        let owner = stored ?? coordinators.configured
        for url in KnownCoordinators.candidates(stored: stored, configured: coordinators.configured, known: pass.known ?? [])
        where !pass.unanswered.contains(url) {
            do {
                let reply = try await client.get("\(url)/v1/transactions/\(workerEventId)", timeout: configuration.coordinatorTimeout)
                if reply.status == 200 { return try reply.decode(TransactionView.self).decision }
                if reply.status == 404, reply.error?.code == .unknownTransaction {
                    guard owner == nil || owner == url else {
                        logger.info("a coordinator that is not this branch's does not know it: not taken as an abort", metadata: [
                            "dtx.worker_event_id": "\(workerEventId)", "dtx.coordinator": "\(url)",
                        ])
                        continue
                    }
                    logger.info("the coordinator never logged this transaction: presumed abort", metadata: [
                        "dtx.worker_event_id": "\(workerEventId)", "dtx.coordinator": "\(url)",
                    ])
                    return .abort
                }
                logger.warning("coordinator has no outcome", metadata: [
                    "dtx.worker_event_id": "\(workerEventId)", "dtx.coordinator": "\(url)", "dtx.http_status": "\(reply.status)",
                ])
            } catch {
                pass.unanswered.insert(url)
                registry.counter("dtx_reconciler_unanswered_total").increment()
                logger.warning("coordinator not reachable: not asked again in this pass", metadata: [
                    "dtx.worker_event_id": "\(workerEventId)", "dtx.coordinator": "\(url)", "dtx.error": "\(error)",
                ])
            }
        }
        return nil
    }
}
