import Foundation

/// "Which mode when": short statements drawn only from the run's numbers, plus the round-trip counts of each mode's
/// critical path (benchmarks/README.md counts them). Markdown inline syntax; pure.
enum ReportConclusions {
    /// Sequential round trips (network hops answered, and database statements) on one global transaction's critical
    /// path, as benchmarks/README.md counts them. Batching adds a wait in a queue; batched TCC also carries confirm and
    /// finalize in one call (two round trips fewer).
    static let criticalPath: [BenchMode: Int] = [
        .pgbenchLocal: 7, .pgbench2PC: 11, .local: 6, .direct: 2,
        .tcc: 10, .tccBatch: 8, .saga: 12, .sagaBatch: 12, .xa: 14, .xaBatch: 14,
    ]

    static func lines(_ views: [ReportScenarioView]) -> [String] {
        var lines: [String] = []
        let protocols = BenchMode.allCases.filter { !$0.isBaseline }
        lines.append("**Round trips on the critical path** of one global transaction (client, coordinator, participants and "
            + "their statements, each waited for in turn): " + [BenchMode.direct, .tcc, .saga, .xa].map { "`\($0.rawValue)` \(criticalPath[$0]!)" }
                .joined(separator: ", ") + ". Batched rows have the same count plus a wait in a queue (`tcc+batch` "
                + "\(criticalPath[.tccBatch]!): confirm and finalize in one call).")
        var cpuExplained = false
        for view in views {
            lines += latencyLines(view, protocols: protocols)
            lines += throughputLines(view, protocols: protocols)
            // what "at most" means, once: with the first scenario that has the line
            let cpu = cpuLines(view, protocols: protocols, explain: !cpuExplained)
            cpuExplained = cpuExplained || !cpu.isEmpty
            lines += cpu
            lines += batchingLines(view)
            lines += recoveryLines(view)
        }
        return lines
    }

    /// At the slowest network with one client: p50 per mode against round trips x RTT.
    static func latencyLines(_ view: ReportScenarioView, protocols: [BenchMode]) -> [String] {
        // one client only: with more, the p50 is queueing on the hot rows, not the round trips the floor counts
        guard let rtt = view.rtts.last, rtt > 0, let clients = view.smallestClients, clients == 1 else { return [] }
        let cells = protocols.compactMap { view.cell($0, clients: clients, rtt: rtt) }.filter { !$0.mode.batched }
        guard cells.count >= 2 else { return [] }
        let parts = cells.map { cell in
            "`\(cell.mode.rawValue)` \(ReportFormat.ms(cell.summary.latencyMs.p50)) ms (floor \(criticalPath[cell.mode]!) × \(ReportFormat.rtt(rtt)) = "
                + "\(ReportFormat.ms(Double(criticalPath[cell.mode]!) * rtt)) ms)"
        }
        let byLatency = cells.sorted { $0.summary.latencyMs.p50 < $1.summary.latencyMs.p50 }.map(\.mode)
        let byRoundTrips = cells.sorted { criticalPath[$0.mode]! < criticalPath[$1.mode]! }.map(\.mode)
        let order = byLatency == byRoundTrips
            ? "the order follows the round-trip counts: the fewer sequential round trips, the lower the latency once the network is slow."
            : "the order does not follow the round-trip counts in this run (" + byLatency.map(\.rawValue).joined(separator: " < ") + ")."
        return ["**\(view.displayName), \(ReportFormat.rtt(rtt)) RTT, \(reportClientsText(clients)):** p50 " + parts.joined(separator: ", ")
            + "; " + order]
    }

    /// Throughput at the largest client count at each RTT: the best and the worst protocol rows, against `direct`.
    static func throughputLines(_ view: ReportScenarioView, protocols: [BenchMode]) -> [String] {
        guard let clients = view.largestClients else { return [] }
        var lines: [String] = []
        for rtt in view.rtts {
            let cells = protocols.compactMap { view.cell($0, clients: clients, rtt: rtt) }
            guard let best = cells.max(by: { $0.summary.throughput.median < $1.summary.throughput.median }),
                  let worst = cells.min(by: { $0.summary.throughput.median < $1.summary.throughput.median }), cells.count >= 2,
                  best.summary.throughput.median > worst.summary.throughput.median  // a tie names no best and worst
            else { continue }
            func describe(_ cell: CellResult) -> String {
                "`\(cell.mode.rawValue)` \(ReportFormat.throughput(cell.summary.throughput.median)) tx/s"
                    + (cell.summary.ratioToDirect.map { " (\(ReportFormat.ratio($0)) `direct`)" } ?? "")
            }
            var line = "**\(view.displayName), \(ReportFormat.rtt(rtt)) RTT, \(reportClientsText(clients)):** most throughput "
                + describe(best) + ", least " + describe(worst) + "."
            let p99 = cells.max { $0.summary.latencyMs.p99 < $1.summary.latencyMs.p99 }
            if let p99 { line += " Highest p99: `\(p99.mode.rawValue)` \(ReportFormat.ms(p99.summary.latencyMs.p99)) ms." }
            lines.append(line)
        }
        return lines
    }

    /// Where the CPU goes, at the largest client count on loopback (0 ms RTT), where every part shares the machine's
    /// cores and throughput goes as the inverse of the CPU each transaction costs: each protocol row's CPU per 1,000
    /// transactions, and the most it could reach against `direct` if its coordinator cost nothing (the participants,
    /// their databases and the load generator doing the same work): `direct`'s CPU over the row's without the
    /// coordinator's. The coordinator's is its process's and, when the bench told the servers apart, its log's server's.
    /// The rest is the protocol's own work at the participants and in their databases, which no coordinator can save.
    static func cpuLines(_ view: ReportScenarioView, protocols: [BenchMode], explain: Bool) -> [String] {
        guard let clients = view.largestClients, view.rtts.first == 0,
              let direct = view.cell(.direct, clients: clients, rtt: 0), case let directCPU = total(direct), directCPU > 0
        else { return [] }
        var withLog = false
        let parts = protocols.compactMap { mode -> String? in
            guard let cell = view.cell(mode, clients: clients, rtt: 0), let process = cell.summary.cpuSecondsPer1000["coordinator"]
            else { return nil }
            let log = cell.summary.cpuSecondsPer1000["postgres-coordinator"]
            let coordinator = process + (log ?? 0)
            guard case let withoutCoordinator = total(cell) - coordinator, withoutCoordinator > 0 else { return nil }
            if log != nil { withLog = true }
            return "`\(mode.rawValue)` \(ReportFormat.cpu(total(cell))) (coordinator \(ReportFormat.cpu(coordinator)), "
                + "at most \(ReportFormat.ratio(directCPU / withoutCoordinator)))"
        }
        guard !parts.isEmpty else { return [] }
        let coordinatorWord = withLog ? "coordinator (its process and its log's PostgreSQL server)" : "coordinator"
        let explanation = " *At most* estimates the throughput a row could reach against `direct` if its \(coordinatorWord) cost "
            + "nothing (`direct`'s CPU over the row's without the coordinator's): the rest is the protocol's own work at the "
            + "participants and in their databases, and the load generator's."
        return ["**\(view.displayName), where the CPU goes** (\(reportClientsText(clients)), 0 ms RTT, every process on this machine): "
            + "CPU seconds per 1,000 transactions, `direct` \(ReportFormat.cpu(directCPU)); " + parts.joined(separator: ", ") + "."
            + (explain ? explanation : "")]
    }

    /// CPU seconds per 1,000 transactions of every process together.
    static func total(_ cell: CellResult) -> Double {
        cell.summary.cpuSecondsPer1000.values.reduce(0, +)
    }

    /// Batched against canonical rows, at the largest client count and the first RTT.
    static func batchingLines(_ view: ReportScenarioView) -> [String] {
        guard let clients = view.largestClients, let rtt = view.rtts.first else { return [] }
        let pairs: [(BenchMode, BenchMode)] = [(.tcc, .tccBatch), (.saga, .sagaBatch), (.xa, .xaBatch)]
        let parts = pairs.compactMap { canonical, batched -> String? in
            guard let plain = view.cell(canonical, clients: clients, rtt: rtt), let batch = view.cell(batched, clients: clients, rtt: rtt),
                  plain.summary.throughput.median > 0
            else { return nil }
            return "`\(batched.rawValue)` \(ReportFormat.ratio(batch.summary.throughput.median / plain.summary.throughput.median)) of `\(canonical.rawValue)`"
        }
        guard !parts.isEmpty else { return [] }
        return ["**\(view.displayName), batching** (\(reportClientsText(clients)), \(ReportFormat.rtt(rtt)) RTT), throughput: " + parts.joined(separator: ", ") + "."]
    }

    static func recoveryLines(_ view: ReportScenarioView) -> [String] {
        let timelines = view.recoveries.filter { $0.recoverySeconds != nil }
        guard !timelines.isEmpty else { return [] }
        // one entry per mode and RTT, the runs' times in order (several with --repeat)
        var groups: [(mode: BenchMode, rtt: Double, seconds: [Double])] = []
        for timeline in timelines {
            let rtt = timeline.rttMs ?? 0
            if let index = groups.firstIndex(where: { $0.mode == timeline.mode && $0.rtt == rtt }) {
                groups[index].seconds.append(timeline.recoverySeconds!)
            } else {
                groups.append((timeline.mode, rtt, [timeline.recoverySeconds!]))
            }
        }
        let showRTT = Set(groups.map(\.rtt)).count > 1
        let parts = groups.map { group in
            "`\(group.mode.rawValue)`" + (showRTT ? " at \(ReportFormat.rtt(group.rtt))" : "") + " "
                + group.seconds.map { ReportFormat.seconds($0) }.joined(separator: " / ")
        }
        return ["**\(view.displayName)** (\(timelines[0].fault)): every transaction begun before the fault was final after " + parts.joined(separator: ", ") + "."]
    }
}
