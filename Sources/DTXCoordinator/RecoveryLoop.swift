import DTXPostgres
import Logging
import Prometheus
import ServiceLifecycle

/// The coordinator's recovery loop (the documented one-minute compensation job, every second here): claims the
/// transactions that are not final and are due, and drives each from its logged phase.
public struct RecoveryLoop: Service {
    let log: TransactionLog
    let driver: TransactionDriver
    let interval: Duration
    let budget: Duration
    let batch: Int
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let claimed = await self.runOnce()
                if claimed < batch, await !pause(for: interval) { return }
            }
        }
    }

    /// One claim and drive; returns how many transactions it claimed.
    @discardableResult
    public func runOnce() async -> Int {
        let claimed: [GlobalTransaction]
        do {
            claimed = try await log.claim(limit: batch)
        } catch {
            logger.warning("recovery could not claim work", metadata: ["dtx.error": "\(error.logDescription)"])
            return 0
        }
        guard !claimed.isEmpty else { return 0 }
        await withTaskGroup(of: Void.self) { group in
            for transaction in claimed {
                group.addTask {
                    do {
                        let done = try await driver.drive(transaction, until: .now + budget)
                        let action = done.isOpen ? "postponed" : "resolved"
                        registry.counter("dtx_recovery_actions_total", [("action", action)]).increment()
                        logger.info("recovery drove a transaction", metadata: [
                            "dtx.worker_event_id": "\(transaction.id)", "dtx.from_phase": "\(transaction.phase)",
                            "dtx.status": "\(done.status.rawValue)", "dtx.phase": "\(done.phase)",
                        ])
                    } catch {
                        registry.counter("dtx_recovery_actions_total", [("action", "error")]).increment()
                        logger.warning("recovery stopped on a transaction", metadata: [
                            "dtx.worker_event_id": "\(transaction.id)", "dtx.error": "\(error.logDescription)",
                        ])
                    }
                }
            }
        }
        return claimed.count
    }
}
