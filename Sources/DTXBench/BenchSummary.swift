/// One cell of the benchmark: a mode at a client count and a round-trip time.
public struct CellKey: Hashable, Sendable {
    public var mode: BenchMode
    public var clients: Int
    public var rttMs: Double

    public init(mode: BenchMode, clients: Int, rttMs: Double) {
        self.mode = mode
        self.clients = clients
        self.rttMs = rttMs
    }
}

/// From the runs of every cell to the cells' summaries: medians with min-max, and the ratios to the baselines and
/// references at the same client count and round-trip time. Pure: no processes, no I/O.
public enum BenchSummary {
    public static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// The cells, ordered by round-trip time, then client count, then mode (the reports' order).
    public static func cells(_ runs: [CellKey: [RunResult]]) -> [CellResult] {
        let keys = runs.keys.filter { !(runs[$0]?.isEmpty ?? true) }.sorted { a, b in
            if a.rttMs != b.rttMs { return a.rttMs < b.rttMs }
            if a.clients != b.clients { return a.clients < b.clients }
            return (BenchMode.allCases.firstIndex(of: a.mode) ?? 0) < (BenchMode.allCases.firstIndex(of: b.mode) ?? 0)
        }
        func throughput(_ mode: BenchMode, like key: CellKey) -> Double? {
            guard let cellRuns = runs[CellKey(mode: mode, clients: key.clients, rttMs: key.rttMs)], !cellRuns.isEmpty else { return nil }
            let value = median(cellRuns.map(\.throughput))
            return value > 0 ? value : nil
        }
        return keys.map { key in
            let cellRuns = runs[key]!
            let value = median(cellRuns.map(\.throughput))
            func ratio(_ baseline: BenchMode) -> Double? { throughput(baseline, like: key).map { value / $0 } }
            return CellResult(mode: key.mode, clients: key.clients, rttMs: key.rttMs, runs: cellRuns, summary: summary(
                cellRuns, ratioToLocal: ratio(.local), ratioToDirect: ratio(.direct), ratioToPgbenchLocal: ratio(.pgbenchLocal),
                ratioToPgbench2PC: ratio(.pgbench2PC)
            ))
        }
    }

    static func summary(
        _ runs: [RunResult], ratioToLocal: Double?, ratioToDirect: Double?, ratioToPgbenchLocal: Double?, ratioToPgbench2PC: Double?
    ) -> CellSummary {
        let throughputs = runs.map(\.throughput)
        var cpuPer1000: [String: Double] = [:]
        for process in Set(runs.flatMap { $0.cpuSeconds.keys }) {
            // per transaction answered (what throughput counts), not per request: errors (a coordinator down answers
            // at once, thousands of times) would make a row look cheap
            cpuPer1000[process] = median(runs.map { run in
                let answered = run.outcomes.completed + run.outcomes.failed + run.outcomes.compensated
                return answered > 0 ? (run.cpuSeconds[process] ?? 0) / Double(answered) * 1000 : 0
            })
        }
        func medianCount(_ count: (Outcomes) -> Int) -> Int { Int(median(runs.map { Double(count($0.outcomes)) }).rounded()) }
        return CellSummary(
            throughput: Spread(median: median(throughputs), min: throughputs.min() ?? 0, max: throughputs.max() ?? 0),
            latencyMs: Percentiles(
                p50: median(runs.map(\.latencyMs.p50)), p90: median(runs.map(\.latencyMs.p90)), p99: median(runs.map(\.latencyMs.p99)),
                p999: median(runs.map(\.latencyMs.p999)), max: runs.map(\.latencyMs.max).max() ?? 0  // the worst any run saw
            ),
            outcomes: Outcomes(
                completed: medianCount(\.completed), failed: medianCount(\.failed), compensated: medianCount(\.compensated),
                pending: medianCount(\.pending), errors: medianCount(\.errors)
            ),
            retries: Int(median(runs.map { Double($0.retries) })),
            cpuSecondsPer1000: cpuPer1000,
            ratioToLocal: ratioToLocal, ratioToDirect: ratioToDirect, ratioToPgbenchLocal: ratioToPgbenchLocal,
            ratioToPgbench2PC: ratioToPgbench2PC,
            invariantsHeld: runs.allSatisfy(\.invariantsHeld)
        )
    }
}
