import Foundation

/// One scenario prepared for rendering: cells in report order, the round-trip times, client counts and processes
/// that occur, anchors.
struct ReportScenarioView {
    let scenario: ScenarioResult
    /// The HTML id of the scenario's section; the charts' ids add "-throughput", "-rtt", "-latency", ...
    let anchor: String
    /// Modes that have cells, in the fixed mode order.
    let modes: [BenchMode]
    /// Distinct round-trip times, ascending.
    let rtts: [Double]
    /// Distinct client counts, ascending.
    let clientCounts: [Int]
    /// One cell per round-trip time, mode and client count (the first when the results hold duplicates).
    let rows: [CellResult]
    /// CPU process keys that occur in any cell.
    let processes: [String]

    init(scenario: ScenarioResult, anchor: String) {
        self.scenario = scenario
        self.anchor = anchor
        modes = BenchMode.allCases.filter { mode in scenario.cells.contains { $0.mode == mode } }
        rtts = Array(Set(scenario.cells.map(\.rttMs))).sorted()
        clientCounts = Array(Set(scenario.cells.map(\.clients))).sorted()
        var seen = Set<CellKey>()
        let unique = scenario.cells.filter { seen.insert(CellKey(mode: $0.mode, clients: $0.clients, rttMs: $0.rttMs)).inserted }
        let order = Dictionary(uniqueKeysWithValues: BenchMode.allCases.enumerated().map { ($1, $0) })
        rows = unique.sorted { lhs, rhs in
            if lhs.rttMs != rhs.rttMs { return lhs.rttMs < rhs.rttMs }
            if lhs.mode != rhs.mode { return order[lhs.mode]! < order[rhs.mode]! }
            return lhs.clients < rhs.clients
        }
        processes = ReportModes.orderedProcesses(scenario.cells.flatMap { $0.summary.cpuSecondsPer1000.keys })
    }

    /// The scenario's name, or a placeholder when it has none.
    var displayName: String {
        scenario.name.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? "(unnamed scenario)" : scenario.name
    }

    var throughputAnchor: String { anchor + "-throughput" }
    var rttAnchor: String { anchor + "-rtt" }
    var latencyAnchor: String { anchor + "-latency" }
    var outcomesAnchor: String { anchor + "-outcomes" }
    var recoveryAnchor: String { anchor + "-recovery" }
    var allAnchors: [String] { [anchor, throughputAnchor, rttAnchor, latencyAnchor, outcomesAnchor, recoveryAnchor] }

    func cell(_ mode: BenchMode, clients: Int, rtt: Double) -> CellResult? {
        rows.first { $0.mode == mode && $0.clients == clients && $0.rttMs == rtt }
    }

    var largestClients: Int? { clientCounts.last }
    var smallestClients: Int? { clientCounts.first }

    /// The cells at the largest client count and the first round-trip time, one per mode (latency and outcomes charts).
    var largestCells: [CellResult] {
        guard let clients = largestClients, let rtt = rtts.first else { return [] }
        return modes.compactMap { cell($0, clients: clients, rtt: rtt) }
    }

    var largestCaption: String {
        guard let clients = largestClients else { return "" }
        return "at \(reportClientsText(clients))" + (rtts.count > 1 || rtts.first != 0 ? " and \(ReportFormat.rtt(rtts.first ?? 0)) RTT" : "")
    }

    /// Every invariant violation of the scenario, one line each, ready to list.
    var violations: [String] {
        var lines: [String] = []
        for cell in rows {
            let place = "\(cell.mode.rawValue), \(reportClientsText(cell.clients)), \(ReportFormat.rtt(cell.rttMs)) RTT"
            var listed = false
            for run in cell.runs.sorted(by: { $0.repetition < $1.repetition }) where !run.invariantsHeld || !run.violations.isEmpty {
                listed = true
                if run.violations.isEmpty { lines.append("\(place), run \(run.repetition): invariant check failed (no details recorded)") }
                lines += run.violations.map { "\(place), run \(run.repetition): \($0)" }
            }
            if !cell.summary.invariantsHeld && !listed { lines.append("\(place): invariant check failed (no details recorded)") }
        }
        for timeline in scenario.recoveries where !timeline.invariantsHeld {
            lines.append("\(timeline.mode.rawValue), recovery after \"\(timeline.fault)\": invariants did not hold")
        }
        return lines
    }

    /// True when every cell and every recovery timeline of `mode` kept the invariants.
    func invariantsHeld(mode: BenchMode) -> Bool {
        rows.filter { $0.mode == mode }.allSatisfy { cell in
            cell.summary.invariantsHeld && cell.runs.allSatisfy { $0.invariantsHeld && $0.violations.isEmpty }
        } && scenario.recoveries.filter { $0.mode == mode }.allSatisfy(\.invariantsHeld)
    }

    /// Parameters sorted by key.
    var parameters: [(key: String, value: String)] {
        scenario.parameters.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
    }

    /// Recovery timelines in mode order, then as they ran, each with its repetition (results written before it was
    /// recorded: counted per mode and round-trip time in the order they ran, which is the repetitions' order).
    var recoveries: [RecoveryTimeline] {
        let order = Dictionary(uniqueKeysWithValues: BenchMode.allCases.enumerated().map { ($1, $0) })
        var seen: [String: Int] = [:]
        let numbered = scenario.recoveries.map { timeline -> RecoveryTimeline in
            var timeline = timeline
            let key = "\(timeline.mode.rawValue)/\(timeline.rttMs ?? 0)"
            seen[key, default: 0] += 1
            if timeline.repetition == nil { timeline.repetition = seen[key] }
            return timeline
        }
        return numbered.enumerated().sorted { lhs, rhs in
            let (left, right) = (order[lhs.element.mode]!, order[rhs.element.mode]!)
            if left != right { return left < right }
            return lhs.offset < rhs.offset
        }.map(\.element)
    }
}

/// One row of the "At a glance" table: a coordinator mode in a scenario, its ratio to `direct` at each round-trip
/// time (at the largest client count).
struct ReportGlanceRow {
    let view: ReportScenarioView
    let mode: BenchMode
    /// By round-trip time.
    let ratioToDirect: [Double: Double]
    let throughput: [Double: Double]
    let invariantsHeld: Bool

    static func rows(_ views: [ReportScenarioView]) -> [ReportGlanceRow] {
        views.flatMap { view in
            view.modes.filter { !$0.isBaseline }.map { mode in
                var ratios: [Double: Double] = [:]
                var throughput: [Double: Double] = [:]
                for rtt in view.rtts {
                    guard let clients = view.largestClients, let cell = view.cell(mode, clients: clients, rtt: rtt) else { continue }
                    ratios[rtt] = cell.summary.ratioToDirect
                    throughput[rtt] = cell.summary.throughput.median
                }
                return ReportGlanceRow(view: view, mode: mode, ratioToDirect: ratios, throughput: throughput, invariantsHeld: view.invariantsHeld(mode: mode))
            }
        }
    }
}

/// A column of the summary table: its header, group, and how a cell fills it. Both reports render from these.
struct ReportColumn {
    enum Kind { case text, number }
    var header: String
    /// Columns that share a group get a spanning header in HTML.
    var group: String?
    var kind: Kind = .number
    var value: (CellResult) -> String
    /// Highlighted when true (failure counts that are not zero).
    var warn: (CellResult) -> Bool = { _ in false }

    static func summary(processes: [String], hasReferences: Bool) -> [ReportColumn] {
        var columns = [
            ReportColumn(header: "Mode", kind: .text) { $0.mode.rawValue },
            ReportColumn(header: "RTT") { ReportFormat.rtt($0.rttMs) },
            ReportColumn(header: "Clients") { String($0.clients) },
            ReportColumn(header: "tx/s median (min–max)") { ReportFormat.throughputSpread($0.summary.throughput) },
            ReportColumn(header: "vs local", group: "Throughput ratio") { ReportFormat.ratio($0.summary.ratioToLocal) },
            ReportColumn(header: "vs direct", group: "Throughput ratio") { ReportFormat.ratio($0.summary.ratioToDirect) },
        ]
        if hasReferences {
            columns.append(ReportColumn(header: "vs pgbench-local", group: "Throughput ratio") { ReportFormat.ratio($0.summary.ratioToPgbenchLocal) })
            columns.append(ReportColumn(header: "vs pgbench-2pc", group: "Throughput ratio") { ReportFormat.ratio($0.summary.ratioToPgbench2PC) })
        }
        let latency: [(String, (Percentiles) -> Double)] = [("p50", \.p50), ("p90", \.p90), ("p99", \.p99), ("p99.9", \.p999), ("max", \.max)]
        columns += latency.map { name, value in ReportColumn(header: name, group: "Latency (ms)") { ReportFormat.ms(value($0.summary.latencyMs)) } }
        let outcomes: [(String, (Outcomes) -> Int)] = [
            ("completed", \.completed), ("failed", \.failed), ("compensated", \.compensated), ("pending", \.pending), ("errors", \.errors),
        ]
        columns += outcomes.map { name, value in
            ReportColumn(header: name, group: "Outcomes", value: { ReportFormat.count(value($0.summary.outcomes)) },
                         warn: { name != "completed" && value($0.summary.outcomes) != 0 })
        }
        columns.append(ReportColumn(header: "retries") { ReportFormat.count($0.summary.retries) })
        columns += processes.map { process in
            ReportColumn(header: process, group: "CPU s per 1,000 tx") { ReportFormat.cpu($0.summary.cpuSecondsPer1000[process]) }
        }
        columns.append(ReportColumn(header: "Invariants", kind: .text, value: { ReportRenderer.invariantsText($0.summary.invariantsHeld) }))
        return columns
    }
}

extension ReportScenarioView {
    /// HTML ids for the scenarios: a slug of the name, unique, never clashing with the report's own section ids.
    static func all(_ results: BenchResults) -> [ReportScenarioView] {
        var used: Set<String> = ["how-to-read", "at-a-glance", "which-mode-when", "environment", "settings", "contents", "top"]
        var views: [ReportScenarioView] = []
        for (index, scenario) in results.scenarios.enumerated() {
            var slug = ""
            for scalar in scenario.name.lowercased().unicodeScalars {
                if (scalar >= "a" && scalar <= "z") || (scalar >= "0" && scalar <= "9") {
                    slug.unicodeScalars.append(scalar)
                } else if !slug.isEmpty && !slug.hasSuffix("-") {
                    slug += "-"
                }
            }
            while slug.hasSuffix("-") { slug.removeLast() }
            if slug.isEmpty { slug = "scenario-\(index + 1)" }
            var candidate = slug
            var suffix = 2
            // also keep clear of the chart ids of earlier scenarios ("a" + "-throughput" vs a scenario named "a-throughput")
            while used.contains(candidate) || ReportScenarioView(scenario: scenario, anchor: candidate).allAnchors.contains(where: used.contains) {
                candidate = "\(slug)-\(suffix)"
                suffix += 1
            }
            let view = ReportScenarioView(scenario: scenario, anchor: candidate)
            used.formUnion(view.allAnchors)
            views.append(view)
        }
        return views
    }
}

/// "1 client" or "16 clients".
func reportClientsText(_ clients: Int) -> String {
    clients == 1 ? "1 client" : "\(clients) clients"
}
