import DTXPostgres
import Foundation
import Histogram

#if canImport(Glibc)
import Glibc
#endif

/// The reference rows: pgbench (libpq, C) on ServiceA's server, with the same products, quantities and rows as the
/// `local` baseline (`pgbench-local`), and as raw two-branch 2PC with no coordinator (`pgbench-2pc`: the two branches
/// on one server, ServiceA's products and their mirrors, as `local` does).
///
/// Each transaction writes its rows with an id from the sequence `dtx_bench_ids` (above `Verifier.baselineIDs`), so
/// that `dtx verify` counts them in the stock arithmetic. pgbench runs for the warm-up plus the measured time with a
/// per-transaction log; only the transactions that ended in the measured window count.
enum Pgbench {
    /// pgbench on PATH, or nil (then the reference rows are skipped).
    static var executable: String? { Command.which("pgbench") }

    static func script(_ mode: BenchMode, workload: Workload) -> String {
        let first = Workload.firstProduct
        let last = first + Int64(workload.products) - 1
        let pick = workload.distribution == .zipf
            ? "\\set p \(first) + random_zipfian(0, \(workload.products - 1), \(max(workload.zipfExponent, 1.001)))"
            : "\\set p random(\(first), \(last))"
        let quantity = workload.quantity
        let mirror = Workload.mirrorOffset
        func branch(_ service: String, product: String, mode: String) -> String {
            """
            UPDATE products SET stock = stock - \(quantity) WHERE id = \(product);
            INSERT INTO transactions (service, product_id, quantity, status, worker_event_id, mode) VALUES ('\(service)', \(product), \(quantity), 'confirm', :id, '\(mode)');
            """
        }
        var lines = [pick, "SELECT nextval('dtx_bench_ids') AS id \\gset"]
        switch mode {
        case .pgbench2PC:
            lines += ["BEGIN;", branch("ServiceA", product: ":p", mode: "xa"), "PREPARE TRANSACTION 'dtx-pgbench-:id-a';"]
            lines += ["BEGIN;", branch("ServiceB", product: ":p + \(mirror)", mode: "xa"), "PREPARE TRANSACTION 'dtx-pgbench-:id-b';"]
            lines += ["COMMIT PREPARED 'dtx-pgbench-:id-a';", "COMMIT PREPARED 'dtx-pgbench-:id-b';"]
        default:
            lines += ["BEGIN;", branch("ServiceA", product: ":p", mode: "saga"), branch("ServiceB", product: ":p + \(mirror)", mode: "saga"), "END;"]
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Runs one reference cell; the load generator's result shape, and pgbench's own CPU seconds.
    static func run(
        _ mode: BenchMode, database: DatabaseURL, clients: Int, plan: LoadPlan, workload: Workload, directory: String
    ) async throws -> (result: LoadResult, cpuSeconds: Double) {
        guard let executable else { throw LaunchError("pgbench is not on PATH") }
        guard case .tcp(let host, let port) = database.endpoint else { throw LaunchError("pgbench needs a TCP database URL") }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let scriptPath = "\(directory)/\(mode.rawValue).sql"
        try script(mode, workload: workload).write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let logPrefix = "\(directory)/\(mode.rawValue)-log-\(getpid())"
        let total = plan.warmup + plan.duration
        // variables inside the gids' quotes need the simple protocol (prepared statements bind them as parameters)
        let protocolMode = mode == .pgbench2PC ? "simple" : "prepared"
        var arguments = [
            "-n", "-c", "\(clients)", "-j", "\(min(clients, 2))", "-T", "\(max(1, Int(total.inSeconds.rounded(.up))))",
            "-M", protocolMode, "-f", scriptPath, "-l", "--log-prefix", logPrefix,
            "-h", host, "-p", "\(port)", "-U", database.username, database.database,
        ]
        // open loop as the other rows (pgbench then measures latency from each transaction's scheduled start too)
        if let rate = plan.rate { arguments.insert(contentsOf: ["-R", String(format: "%.3f", rate)], at: 0) }
        let childrenBefore = ProcessCPU.reapedChildrenSeconds()
        let started = Date()
        let process = try ChildProcess.spawn(name: mode.rawValue, executable: executable, arguments: arguments, logPath: "\(directory)/\(mode.rawValue).log")
        guard let status = await process.wait(timeout: total + .seconds(60)) else {
            await process.stop()
            throw LaunchError("pgbench did not end in time; its log: \(process.logPath)")
        }
        let cpu = ProcessCPU.reapedChildrenSeconds() - childrenBefore
        defer {
            for file in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where file.hasPrefix(URL(fileURLWithPath: logPrefix).lastPathComponent) {
                try? FileManager.default.removeItem(atPath: "\(directory)/\(file)")
            }
        }
        guard status == 0 else { throw LaunchError("pgbench exited with \(status); its log (\(process.logPath)) ends:\n\(process.logTail())") }
        return (try parseLogs(prefix: logPrefix, started: started, plan: plan), cpu)
    }

    /// pgbench's per-transaction logs (`client transaction latency_us script epoch_s epoch_us` per line) as a load
    /// result over the measured window.
    static func parseLogs(prefix: String, started: Date, plan: LoadPlan) throws -> LoadResult {
        let folder = URL(fileURLWithPath: prefix).deletingLastPathComponent().path
        let base = URL(fileURLWithPath: prefix).lastPathComponent
        let from = started.timeIntervalSince1970 + plan.warmup.inSeconds
        let until = from + plan.duration.inSeconds
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var outcomes = Outcomes()
        let sampleSeconds = plan.sampleInterval.inSeconds
        var samples: [Int] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: folder) where file.hasPrefix(base) {
            let text = try String(contentsOfFile: "\(folder)/\(file)", encoding: .utf8)
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count >= 6, let latency = UInt64(fields[2]), let seconds = Double(fields[4]), let micros = Double(fields[5]) else {
                    continue  // a failed transaction's line says "failed" where its latency would be
                }
                let ended = seconds + micros / 1e6
                let bucket = Int(max(0, ended - started.timeIntervalSince1970) / sampleSeconds)
                if samples.count <= bucket { samples += Array(repeating: 0, count: bucket - samples.count + 1) }
                samples[bucket] += 1
                guard ended >= from, ended <= until else { continue }
                _ = histogram.record(max(1, latency))
                outcomes.completed += 1
            }
        }
        return LoadResult(measuredSeconds: plan.duration.inSeconds, latency: histogram, outcomes: outcomes, samples: samples, sampleSeconds: sampleSeconds)
    }
}
