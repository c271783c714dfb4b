import Foundation

/// One scenario prepared for rendering: cells in report order, the client counts and processes that occur, anchors.
struct ReportScenarioView {
    let scenario: ScenarioResult
    /// The HTML id of the scenario's section; the charts' ids add "-throughput", "-latency", "-outcomes", "-recovery".
    let anchor: String
    /// Modes that have cells, in the fixed mode order.
    let modes: [String]
    /// Distinct client counts, ascending.
    let clientCounts: [Int]
    /// One cell per mode and client count (the first when the results hold duplicates), mode-major.
    let rows: [CellResult]
    /// CPU process keys that occur in any cell.
    let processes: [String]

    init(scenario: ScenarioResult, anchor: String) {
        self.scenario = scenario
        self.anchor = anchor
        modes = ReportModes.ordered(scenario.cells.map(\.mode))
        clientCounts = Array(Set(scenario.cells.map(\.clients))).sorted()
        var seen = Set<String>()
        var unique: [CellResult] = []
        for cell in scenario.cells where seen.insert("\(cell.mode)\u{1}\(cell.clients)").inserted {
            unique.append(cell)
        }
        let order = Dictionary(uniqueKeysWithValues: modes.enumerated().map { ($1, $0) })
        rows = unique.sorted { lhs, rhs in
            let left = order[lhs.mode] ?? Int.max
            let right = order[rhs.mode] ?? Int.max
            return left != right ? left < right : lhs.clients < rhs.clients
        }
        processes = ReportModes.orderedProcesses(scenario.cells.flatMap { $0.summary.cpuSecondsPer1000.keys })
    }

    /// The scenario's name, or a placeholder when it has none.
    var displayName: String {
        scenario.name.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? "(unnamed scenario)" : scenario.name
    }

    var throughputAnchor: String { anchor + "-throughput" }
    var latencyAnchor: String { anchor + "-latency" }
    var outcomesAnchor: String { anchor + "-outcomes" }
    var recoveryAnchor: String { anchor + "-recovery" }

    func cell(mode: String, clients: Int) -> CellResult? {
        rows.first { $0.mode == mode && $0.clients == clients }
    }

    /// Per mode, the cell at that mode's largest client count.
    var largestCells: [CellResult] {
        modes.compactMap { mode in rows.filter { $0.mode == mode }.max { $0.clients < $1.clients } }
    }

    /// "at 16 clients" when every mode's largest client count is the same, else a note that it varies.
    var largestCaption: String {
        let counts = Set(largestCells.map(\.clients))
        if counts.count == 1, let only = counts.first { return "at \(reportClientsText(only))" }
        return "at each mode's largest client count"
    }

    /// Every invariant violation of the scenario, one line each, ready to list.
    var violations: [String] {
        var lines: [String] = []
        for cell in rows {
            let place = "\(cell.mode), \(reportClientsText(cell.clients))"
            var listed = false
            for run in cell.runs.sorted(by: { $0.repetition < $1.repetition }) where !run.invariantsHeld || !run.violations.isEmpty {
                listed = true
                if run.violations.isEmpty {
                    lines.append("\(place), run \(run.repetition): invariant check failed (no details recorded)")
                }
                for violation in run.violations {
                    lines.append("\(place), run \(run.repetition): \(violation)")
                }
            }
            if !cell.summary.invariantsHeld && !listed {
                lines.append("\(place): invariant check failed (no details recorded)")
            }
        }
        for timeline in scenario.recoveries where !timeline.invariantsHeld {
            lines.append("\(timeline.mode), recovery after \"\(timeline.fault)\": invariants did not hold")
        }
        return lines
    }

    /// True when every cell and every recovery timeline of `mode` kept the invariants.
    func invariantsHeld(mode: String) -> Bool {
        rows.filter { $0.mode == mode }.allSatisfy { cell in
            cell.summary.invariantsHeld && cell.runs.allSatisfy { $0.invariantsHeld && $0.violations.isEmpty }
        } && scenario.recoveries.filter { $0.mode == mode }.allSatisfy(\.invariantsHeld)
    }

    /// Parameters sorted by key.
    var parameters: [(key: String, value: String)] {
        scenario.parameters.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
    }

    /// Recovery timelines in mode order (stable within a mode).
    var recoveries: [RecoveryTimeline] {
        let order = Dictionary(uniqueKeysWithValues: ReportModes.ordered(scenario.recoveries.map(\.mode)).enumerated().map { ($1, $0) })
        return scenario.recoveries.enumerated().sorted { lhs, rhs in
            let left = order[lhs.element.mode] ?? Int.max
            let right = order[rhs.element.mode] ?? Int.max
            return left != right ? left < right : lhs.offset < rhs.offset
        }.map(\.element)
    }
}

/// One row of the "At a glance" table.
struct ReportGlanceRow {
    let view: ReportScenarioView
    let mode: String?
    let bestRatioToDirect: Double?
    let bestRatioClients: Int?
    let largest: CellResult?
    let invariantsHeld: Bool

    /// For every scenario, one row per non-baseline mode (or a single row without a mode when it ran none).
    static func rows(_ views: [ReportScenarioView]) -> [ReportGlanceRow] {
        var rows: [ReportGlanceRow] = []
        for view in views {
            let modes = view.modes.filter { !ReportModes.isBaseline($0) }
            if modes.isEmpty {
                rows.append(ReportGlanceRow(
                    view: view, mode: nil, bestRatioToDirect: nil, bestRatioClients: nil, largest: nil,
                    invariantsHeld: view.modes.allSatisfy { view.invariantsHeld(mode: $0) }))
                continue
            }
            for mode in modes {
                let cells = view.rows.filter { $0.mode == mode }
                let best = cells.filter { $0.summary.ratioToDirect?.isFinite ?? false }
                    .max { ($0.summary.ratioToDirect ?? 0) < ($1.summary.ratioToDirect ?? 0) }
                rows.append(ReportGlanceRow(
                    view: view, mode: mode, bestRatioToDirect: best?.summary.ratioToDirect, bestRatioClients: best?.clients,
                    largest: cells.max { $0.clients < $1.clients }, invariantsHeld: view.invariantsHeld(mode: mode)))
            }
        }
        return rows
    }
}

extension ReportScenarioView {
    /// HTML ids for the scenarios: a slug of the name, unique, never clashing with the report's own section ids.
    static func all(_ results: BenchResults) -> [ReportScenarioView] {
        var used: Set<String> = ["how-to-read", "at-a-glance", "environment", "settings", "contents", "top"]
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
            // Also keep clear of the chart ids of earlier scenarios ("a" + "-throughput" vs a scenario named "a-throughput").
            while used.contains(candidate) {
                candidate = "\(slug)-\(suffix)"
                suffix += 1
            }
            let view = ReportScenarioView(scenario: scenario, anchor: candidate)
            used.formUnion([candidate, view.throughputAnchor, view.latencyAnchor, view.outcomesAnchor, view.recoveryAnchor])
            views.append(view)
        }
        return views
    }
}

/// "1 client" or "16 clients".
func reportClientsText(_ clients: Int) -> String {
    clients == 1 ? "1 client" : "\(clients) clients"
}
