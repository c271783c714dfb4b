import Foundation

/// Turns the results of one `dtx bench` invocation into `report.md` and `report.html`.
///
/// Both reports hold the same tables and the same closing "Which mode when"; the charts exist only in the HTML file
/// (inline SVG), and the Markdown report links to them by anchor (`report.html#<scenario>-throughput`, `-rtt`, ...).
public enum ReportRenderer {
    static let title = "dtx benchmark: TCC vs Saga vs XA"
    static let htmlFileName = "report.html"
    static let percentileOpacities = [0.35, 0.55, 0.78, 1.0]

    /// report.md: Markdown tables and links to the charts (the charts are in report.html; link to it with anchors).
    public static func markdown(_ results: BenchResults) -> String {
        let views = ReportScenarioView.all(results)
        var out: [String] = ["# \(title)", ""]
        out.append("The charts are in [\(htmlFileName)](\(htmlFileName)), a single self-contained file that opens offline.")
        out += ["", "## How to read this", "", howToRead(results.settings), "", "## At a glance", ""]
        out += markdownGlance(views)
        out += ["", "## Environment", ""]
        out += markdownTable(header: ["Item", "Value"], alignRight: [], rows: environmentRows(results.environment))
        if !results.environment.postgresSettings.isEmpty {
            out += ["", "PostgreSQL settings (ServiceA's server; the three servers are set alike):", ""]
            let settings = results.environment.postgresSettings.sorted { $0.key < $1.key }.map { [$0.key, $0.value] }
            out += markdownTable(header: ["Setting", "Value"], alignRight: [], rows: settings)
        }
        out += ["", "## Settings", ""]
        out += markdownTable(header: ["Setting", "Value"], alignRight: [], rows: settingsRows(results.settings))
        for view in views {
            out.append("")
            out += markdownScenario(view, settings: results.settings)
        }
        if views.isEmpty { out += ["", "_No scenarios were run._"] }
        out += ["", "## Which mode when", ""]
        out += ReportConclusions.lines(views).map { "- " + $0 }
        out.append("")
        return out.joined(separator: "\n")
    }

    /// report.html: ONE self-contained HTML file (inline CSS, inline SVG charts, no JavaScript needed, no external URLs),
    /// readable offline.
    public static func html(_ results: BenchResults) -> String {
        let views = ReportScenarioView.all(results)
        let environment = results.environment
        var out: [String] = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">"]
        out.append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        out += ["<title>\(esc(title))</title>", "<style>\n\(css)\n</style>", "</head>", "<body>", "<main>"]
        out.append("<h1 id=\"top\">\(esc(title))</h1>")
        out.append("<p class=\"meta\">\(esc(environment.startedAt)) – \(esc(environment.finishedAt)) · commit <code>"
            + "\(esc(environment.gitCommit))</code> · \(esc(environment.buildConfiguration)) build · \(esc(environment.cpuModel))</p>")
        out.append("<nav id=\"contents\"><strong>Contents:</strong> <a href=\"#how-to-read\">How to read this</a> · "
            + "<a href=\"#at-a-glance\">At a glance</a> · <a href=\"#environment\">Environment</a> · "
            + "<a href=\"#settings\">Settings</a>"
            + views.map { " · <a href=\"#\(esc($0.anchor))\">\(esc($0.displayName))</a>" }.joined()
            + " · <a href=\"#which-mode-when\">Which mode when</a></nav>")
        out += ["<section id=\"how-to-read\">", "<h2>How to read this</h2>", "<p>\(inlineHTML(howToRead(results.settings)))</p>", "</section>"]
        out += ["<section id=\"at-a-glance\">", "<h2>At a glance</h2>"]
        out += htmlGlance(views)
        out += ["</section>", "<section id=\"environment\">", "<h2>Environment</h2>", "<div class=\"pair\">"]
        out += htmlKeyValueTable(environmentRows(environment), caption: nil)
        if !environment.postgresSettings.isEmpty {
            let settings = environment.postgresSettings.sorted { $0.key < $1.key }.map { [$0.key, $0.value] }
            out += htmlKeyValueTable(settings, caption: "PostgreSQL settings", header: ["Setting", "Value"])
        }
        out += ["</div>", "</section>", "<section id=\"settings\">", "<h2>Settings</h2>"]
        out += htmlKeyValueTable(settingsRows(results.settings), caption: nil)
        out.append("</section>")
        for view in views { out += htmlScenario(view, settings: results.settings) }
        if views.isEmpty { out.append("<p><em>No scenarios were run.</em></p>") }
        out += ["<section id=\"which-mode-when\">", "<h2>Which mode when</h2>", "<ul class=\"conclusions\">"]
        out += ReportConclusions.lines(views).map { "<li>\(inlineHTML($0))</li>" }
        out += ["</ul>", "</section>", "</main>", "</body>", "</html>", ""]
        return out.joined(separator: "\n")
    }

    // MARK: - Shared text

    static func esc(_ text: String) -> String {
        ReportFormat.html(text)
    }

    /// The "How to read this" paragraph, in Markdown inline syntax (backticks and **bold** only).
    static func howToRead(_ settings: BenchSettings) -> String {
        let runs = settings.repeats == 1 ? "once" : "\(settings.repeats) times"
        return "Each cell is one mode at one number of concurrent clients and one round-trip time (**RTT**) between every two "
            + "parts, measured for \(ReportFormat.seconds(settings.durationSeconds)) after a \(ReportFormat.seconds(settings.warmupSeconds)) "
            + "warm-up, \(runs) (\(loadText(settings))). Numbers are the **median** of those runs, with min–max in brackets and as "
            + "whiskers in the charts. At 0 ms the parts talk over loopback; above it every connection (load generator, coordinator, "
            + "participants, each service's own PostgreSQL server) passes a relay that holds each chunk for half the RTT each way. "
            + "**vs local** is the throughput ratio to `local`, both stock decrements in one local transaction; **vs direct** to "
            + "`direct`, the client calling both participants' reserve itself — no coordinator, no atomicity; **vs pgbench-local** and "
            + "**vs pgbench-2pc** to pgbench (C, libpq) doing the `local` work, and raw two-branch PREPARE / COMMIT PREPARED, on the same "
            + "server. `tcc`, `saga` and `xa` are the canonical protocols, one request per branch call; `+batch` rows carry "
            + "second-phase calls of many transactions in one request and group-commit the coordinator's log. Latencies are end to end "
            + "per global transaction, in ms. CPU is CPU seconds per 1,000 global transactions, per process (`relay` is the network "
            + "stand-in, not dtx). Absolute numbers depend on the machine: compare the ratios of one run."
    }

    static func loadText(_ settings: BenchSettings) -> String {
        switch settings.loop {
        case "open":
            let rate = settings.rate.map { ReportFormat.throughput($0) + " requests/s" } ?? "unknown rate"
            return "open loop at \(rate)"
        case "closed":
            return "closed loop: each client sends its next request when the last one is answered"
        default:
            let rate = settings.rate.map { " at " + ReportFormat.throughput($0) + " requests/s" } ?? ""
            return "\(settings.loop) loop\(rate)"
        }
    }

    static func environmentRows(_ environment: BenchEnvironment) -> [[String]] {
        [
            ["CPU", environment.cpuModel],
            ["Cores", String(environment.cores)],
            ["Memory", ReportFormat.grouped(environment.memoryGiB, decimals: 1) + " GiB"],
            ["OS", environment.os],
            ["PostgreSQL", environment.postgresVersion],
            ["Git commit", environment.gitCommit],
            ["Build configuration", environment.buildConfiguration],
            ["Started", environment.startedAt],
            ["Finished", environment.finishedAt],
        ]
    }


    static func settingsRows(_ settings: BenchSettings) -> [[String]] {
        var rows = [
            ["Round-trip times", (settings.rttMs ?? [0]).map(ReportFormat.rtt).joined(separator: ", ")],
            ["Repeats per cell", String(settings.repeats)],
            ["Duration per run", ReportFormat.seconds(settings.durationSeconds)],
            ["Warm-up", ReportFormat.seconds(settings.warmupSeconds)],
            ["Loop", settings.loop],
        ]
        if let rate = settings.rate {
            rows.append(["Arrival rate", ReportFormat.throughput(rate) + " requests/s"])
        }
        rows.append(["Batch window (`+batch` rows)", settings.batchWindowMs.map { ReportFormat.ms($0) + " ms" } ?? "the coordinator's default"])
        return rows
    }

    static func invariantsText(_ held: Bool) -> String {
        held ? "✔ held" : "✘ violated"
    }

    // MARK: - Markdown

    static func markdownTable(header: [String], alignRight: Set<Int>, rows: [[String]]) -> [String] {
        var lines = ["| " + header.map(ReportFormat.markdownCell).joined(separator: " | ") + " |"]
        lines.append("|" + header.indices.map { alignRight.contains($0) ? "---:" : "---" }.joined(separator: "|") + "|")
        for row in rows {
            let padded = row + Array(repeating: "", count: max(0, header.count - row.count))
            lines.append("| " + padded.map(ReportFormat.markdownCell).joined(separator: " | ") + " |")
        }
        return lines
    }

    static func markdownLink(_ anchor: String) -> String {
        "[\(htmlFileName)#\(anchor)](\(htmlFileName)#\(anchor))"
    }

    static func markdownGlance(_ views: [ReportScenarioView]) -> [String] {
        guard !views.isEmpty else { return ["_No scenarios._"] }
        let rtts = Array(Set(views.flatMap(\.rtts))).sorted()
        var rows: [[String]] = []
        var previous: String?
        for row in ReportGlanceRow.rows(views) {
            let scenario = previous == row.view.anchor ? "" : row.view.displayName
            previous = row.view.anchor
            rows.append([scenario, row.mode.rawValue] + rtts.map { glanceCell(row, rtt: $0) } + [invariantsText(row.invariantsHeld)])
        }
        var lines = markdownTable(
            header: ["Scenario", "Mode"] + rtts.map { "vs direct at \(ReportFormat.rtt($0))" } + ["Invariants (every cell)"],
            alignRight: Set(2..<(2 + rtts.count)), rows: rows)
        lines += ["", "Each mode's throughput ratio to `direct` at each round-trip time, at the scenario's largest client count "
            + "(its throughput in brackets). Invariants include the recovery runs."]
        return lines
    }

    static func glanceCell(_ row: ReportGlanceRow, rtt: Double) -> String {
        guard let ratio = row.ratioToDirect[rtt] else { return row.throughput[rtt].map { "(\(ReportFormat.throughput($0)) tx/s)" } ?? ReportFormat.missing }
        return ReportFormat.ratio(ratio) + (row.throughput[rtt].map { " (\(ReportFormat.throughput($0)))" } ?? "")
    }

    static func markdownScenario(_ view: ReportScenarioView, settings: BenchSettings) -> [String] {
        let scenario = view.scenario
        var out = ["## Scenario: \(view.displayName)", ""]
        if !scenario.description.isEmpty { out += [scenario.description, ""] }
        if view.parameters.isEmpty {
            out.append("_No parameters._")
        } else {
            out += markdownTable(header: ["Parameter", "Value"], alignRight: [], rows: view.parameters.map { [$0.key, $0.value] })
        }
        out += ["", "### Summary", ""]
        if view.rows.isEmpty {
            out.append("_No cells were measured._")
        } else {
            let columns = ReportColumn.summary(processes: view.processes, hasReferences: view.modes.contains(where: \.isReference))
            let numeric = Set(columns.indices.filter { columns[$0].kind == .number })
            out += markdownTable(header: columns.map { ($0.group.map { "\($0): " } ?? "") + $0.header }, alignRight: numeric,
                                 rows: view.rows.map { cell in columns.map { $0.value(cell) } })
            out += ["", "Latency in ms; outcomes are counts; CPU is CPU seconds per 1,000 global transactions, per process."]
        }
        let violations = view.violations
        if !violations.isEmpty {
            out += ["", "**Invariant violations:**", ""]
            out += violations.map { "- " + $0.replacingOccurrences(of: "\n", with: " ") }
        }
        if !view.rows.isEmpty {
            out += ["", "### Charts", ""]
            out.append("- Throughput vs clients: see \(markdownLink(view.throughputAnchor))")
            if view.rtts.count > 1 { out.append("- Throughput and p50 / p99 latency vs round-trip time: see \(markdownLink(view.rttAnchor))") }
            out.append("- Latency percentiles \(view.largestCaption): see \(markdownLink(view.latencyAnchor))")
            out.append("- Outcomes \(view.largestCaption): see \(markdownLink(view.outcomesAnchor))")
        }
        if !scenario.recoveries.isEmpty {
            out += ["", "### Recovery", ""]
            out += markdownTable(header: ["Mode", "RTT", "Run", "Fault", "Fault at", "Recovery", "Invariants"], alignRight: [1, 2, 4, 5],
                                 rows: view.recoveries.map(recoveryValues))
            out += ["", "\(recoveryCaption) Throughput timelines: see \(markdownLink(view.recoveryAnchor))"]
        }
        return out
    }

    /// What the recovery table's columns count. "Fault at" is on the run's clock, as the timelines are: the scenario's
    /// time counts from the end of the warm-up, so the two differ by the warm-up.
    static let recoveryCaption = "Fault at: seconds from the start of the run, warm-up included (the scenario's time counts "
        + "from the end of the warm-up); recovery: seconds from the fault until every global transaction begun before it had "
        + "its final outcome (down time included); invariants: the check after the run."

    static func recoveryValues(_ timeline: RecoveryTimeline) -> [String] {
        let unresolved = timeline.resolvedAtSeconds == nil ? "not resolved" : ReportFormat.missing
        let recovery = timeline.recoverySeconds.map { ReportFormat.seconds($0) } ?? unresolved
        return [timeline.mode.rawValue, ReportFormat.rtt(timeline.rttMs ?? 0), timeline.repetition.map(String.init) ?? ReportFormat.missing,
                timeline.fault, ReportFormat.seconds(timeline.faultAtSeconds), recovery, invariantsText(timeline.invariantsHeld)]
    }

    /// "5 ms RTT, run 2": which of a mode's timelines this is.
    static func recoveryPlace(_ timeline: RecoveryTimeline) -> String {
        "\(ReportFormat.rtt(timeline.rttMs ?? 0)) RTT" + (timeline.repetition.map { ", run \($0)" } ?? "")
    }

    // MARK: - HTML

    /// Escapes fixed report text, then renders its backticks as `<code>` and `**…**` as `<strong>`.
    static func inlineHTML(_ text: String) -> String {
        var out = ""
        var inCode = false
        var inBold = false
        var characters = Array(esc(text))[...]
        while let character = characters.first {
            characters = characters.dropFirst()
            if character == "`" {
                out += inCode ? "</code>" : "<code>"
                inCode.toggle()
            } else if character == "*", characters.first == "*", !inCode {
                characters = characters.dropFirst()
                out += inBold ? "</strong>" : "<strong>"
                inBold.toggle()
            } else {
                out.append(character)
            }
        }
        if inCode { out += "</code>" }
        if inBold { out += "</strong>" }
        return out
    }

    static func modeHTML(_ mode: BenchMode) -> String {
        "<span class=\"mode\"><span class=\"chip\" style=\"background:\(ReportModes.color(mode))\"></span>\(esc(mode.rawValue))</span>"
    }

    static func invariantsHTML(_ held: Bool) -> String {
        held ? "<span class=\"ok\">✔ held</span>" : "<span class=\"bad\">✘ violated</span>"
    }

    static func htmlKeyValueTable(_ rows: [[String]], caption: String?, header: [String]? = nil) -> [String] {
        var out = ["<table class=\"kv\">"]
        if let caption { out.append("<caption>\(esc(caption))</caption>") }
        if let header { out.append("<thead><tr>" + header.map { "<th>\(esc($0))</th>" }.joined() + "</tr></thead>") }
        out.append("<tbody>")
        for row in rows {
            let key = row.first ?? ""
            let value = row.dropFirst().joined(separator: " ")
            out.append("<tr><th scope=\"row\">\(esc(key))</th><td>\(esc(value))</td></tr>")
        }
        out.append("</tbody></table>")
        return out
    }

    static func htmlGlance(_ views: [ReportScenarioView]) -> [String] {
        guard !views.isEmpty else { return ["<p><em>No scenarios.</em></p>"] }
        let rtts = Array(Set(views.flatMap(\.rtts))).sorted()
        var out = ["<div class=\"scroll\"><table class=\"glance\">"]
        out.append("<thead><tr><th>Scenario</th><th>Mode</th>" + rtts.map { "<th class=\"num\">vs direct at \(esc(ReportFormat.rtt($0)))</th>" }.joined()
            + "<th>Invariants (every cell)</th></tr></thead>")
        out.append("<tbody>")
        let rows = ReportGlanceRow.rows(views)
        var index = 0
        while index < rows.count {
            let anchor = rows[index].view.anchor
            let group = rows[index...].prefix { $0.view.anchor == anchor }
            for (offset, row) in group.enumerated() {
                var line = "<tr\(offset == 0 ? " class=\"first\"" : "")>"
                if offset == 0 {
                    line += "<td rowspan=\"\(group.count)\"><a href=\"#\(esc(anchor))\">\(esc(row.view.displayName))</a></td>"
                }
                line += "<td>\(modeHTML(row.mode))</td>" + rtts.map { "<td class=\"num\">\(esc(glanceCell(row, rtt: $0)))</td>" }.joined()
                line += "<td>\(invariantsHTML(row.invariantsHeld))</td></tr>"
                out.append(line)
            }
            index += group.count
        }
        out.append("</tbody></table></div>")
        out.append("<p class=\"note\">Each mode's throughput ratio to <code>direct</code> at each round-trip time, at the scenario's largest "
            + "client count (its throughput in brackets). Invariants include the recovery runs.</p>")
        return out
    }

    static func htmlScenario(_ view: ReportScenarioView, settings: BenchSettings) -> [String] {
        let scenario = view.scenario
        var out = ["<section class=\"scenario\" id=\"\(esc(view.anchor))\">", "<h2>Scenario: \(esc(view.displayName))</h2>"]
        if !scenario.description.isEmpty { out.append("<p class=\"description\">\(esc(scenario.description))</p>") }
        if view.parameters.isEmpty {
            out.append("<p class=\"note\">No parameters.</p>")
        } else {
            out += htmlKeyValueTable(view.parameters.map { [$0.key, $0.value] }, caption: nil, header: ["Parameter", "Value"])
        }
        out.append("<h3 id=\"\(esc(view.anchor))-summary\">Summary</h3>")
        if view.rows.isEmpty {
            out.append("<p class=\"note\">No cells were measured.</p>")
        } else {
            out += htmlSummaryTable(view)
        }
        let violations = view.violations
        if !violations.isEmpty {
            out.append("<div class=\"violations\"><strong>Invariant violations:</strong><ul>")
            out += violations.map { "<li>\(esc($0))</li>" }
            out.append("</ul></div>")
        }
        if !view.rows.isEmpty {
            out.append("<h3>Charts</h3>")
            out += throughputFigure(view, settings: settings)
            if view.rtts.count > 1 { out += rttFigures(view, settings: settings) }
            out += latencyFigure(view)
            out += outcomesFigure(view)
        }
        if !scenario.recoveries.isEmpty { out += recoverySection(view) }
        out.append("</section>")
        return out
    }

    static func htmlSummaryTable(_ view: ReportScenarioView) -> [String] {
        let columns = ReportColumn.summary(processes: view.processes, hasReferences: view.modes.contains(where: \.isReference))
        var out = ["<div class=\"scroll\"><table class=\"summary\">", "<thead>"]
        // first header row: ungrouped columns span two rows, groups span their columns
        var first = "<tr>"
        var second = "<tr>"
        var index = 0
        while index < columns.count {
            let column = columns[index]
            let numClass = column.kind == .number ? " class=\"num\"" : ""
            if let group = column.group {
                let span = columns[index...].prefix { $0.group == group }.count
                first += "<th colspan=\"\(span)\" class=\"group\">\(esc(group))</th>"
                for member in columns[index..<(index + span)] { second += "<th class=\"num\">\(esc(member.header))</th>" }
                index += span
            } else {
                first += "<th rowspan=\"2\"\(numClass)>\(esc(column.header))</th>"
                index += 1
            }
        }
        out += [first + "</tr>", second + "</tr>", "</thead>", "<tbody>"]
        var previous: (BenchMode, Double)?
        for cell in view.rows {
            let isFirst = previous.map { $0.0 != cell.mode || $0.1 != cell.rttMs } ?? true
            previous = (cell.mode, cell.rttMs)
            var line = "<tr\(isFirst ? " class=\"first\"" : "")>"
            for column in columns {
                if column.header == "Mode" {
                    line += "<td>\(modeHTML(cell.mode))</td>"
                } else if column.header == "Invariants" {
                    line += "<td>\(invariantsHTML(cell.summary.invariantsHeld))</td>"
                } else {
                    let classes = (column.kind == .number ? ["num"] : []) + (column.warn(cell) ? ["warn"] : [])
                    line += "<td\(classes.isEmpty ? "" : " class=\"\(classes.joined(separator: " "))\"")>\(esc(column.value(cell)))</td>"
                }
            }
            out.append(line + "</tr>")
        }
        out.append("</tbody></table></div>")
        out.append("<p class=\"note\">Latency in ms, end to end. Outcomes are counts. CPU is CPU seconds per 1,000 global "
            + "transactions, per process. — means not measured or not applicable.</p>")
        return out
    }

    static func figure(id: String, svg: String, caption: String) -> [String] {
        ["<figure id=\"\(esc(id))\">", svg, "<figcaption>\(caption)</figcaption>", "</figure>"]
    }

    /// Throughput against clients, a chart per round-trip time.
    static func throughputFigure(_ view: ReportScenarioView, settings: BenchSettings) -> [String] {
        let runs = settings.repeats == 1 ? "1 run" : "\(settings.repeats) runs"
        var out: [String] = []
        for (index, rtt) in view.rtts.enumerated() {
            let at = view.rtts.count > 1 || rtt > 0 ? " at \(ReportFormat.rtt(rtt)) RTT" : ""
            let chartTitle = "\(view.displayName): throughput vs clients\(at)"
            let svg: String
            if view.clientCounts.count > 1 {
                let series = view.modes.map { mode in
                    ReportLineSeries(name: mode.rawValue, color: ReportModes.color(mode), dashed: mode.isBaseline, points: points(view.clientCounts.enumerated().map { index, clients in
                        (index, view.cell(mode, clients: clients, rtt: rtt), "\(mode.rawValue), \(reportClientsText(clients))\(at)")
                    }))
                }
                svg = ReportCharts.categoryLines(title: chartTitle, categories: view.clientCounts.map(String.init), series: series,
                                                 xTitle: "concurrent clients", yTitle: "throughput (tx/s, median of \(runs))")
            } else {
                let clients = view.clientCounts.first ?? 0
                let groups = view.modes.compactMap { mode -> ReportBarGroup? in
                    guard let cell = view.cell(mode, clients: clients, rtt: rtt) else { return nil }
                    let spread = cell.summary.throughput
                    return ReportBarGroup(label: mode.rawValue, sublabel: nil, bars: [ReportBar(
                        value: spread.median, low: spread.min, high: spread.max, color: ReportModes.color(mode),
                        tooltip: "\(mode.rawValue), \(reportClientsText(clients))\(at): \(ReportFormat.throughputSpread(spread)) tx/s",
                        valueLabel: ReportFormat.throughput(spread.median))])
                }
                svg = ReportCharts.groupedBars(title: chartTitle, groups: groups, legend: [], xTitle: "mode (\(reportClientsText(clients)))",
                                               yTitle: "throughput (tx/s, median of \(runs))", logScale: false)
            }
            let id = index == 0 ? view.throughputAnchor : "\(view.throughputAnchor)-\(index + 1)"
            out += figure(id: id, svg: svg, caption: "Throughput\(esc(at)): median of \(runs); whiskers show min–max. Dashed lines: baselines and references.")
        }
        return out
    }

    /// Throughput, p50 and p99 against the round-trip time, one line per mode: the network's price for each protocol.
    static func rttFigures(_ view: ReportScenarioView, settings: BenchSettings) -> [String] {
        guard let largest = view.largestClients, let smallest = view.smallestClients else { return [] }
        let categories = view.rtts.map(ReportFormat.rtt)
        func series(clients: Int, _ metric: @escaping (CellResult) -> (Double, Double, Double)) -> [ReportLineSeries] {
            view.modes.map { mode in
                ReportLineSeries(name: mode.rawValue, color: ReportModes.color(mode), dashed: mode.isBaseline,
                                 points: points(view.rtts.enumerated().map { index, rtt in
                                     (index, view.cell(mode, clients: clients, rtt: rtt), "\(mode.rawValue), \(ReportFormat.rtt(rtt)) RTT, \(reportClientsText(clients))")
                                 }, metric))
            }
        }
        let throughput = ReportCharts.categoryLines(
            title: "\(view.displayName): throughput vs round-trip time (\(reportClientsText(largest)))", categories: categories,
            series: series(clients: largest) { ($0.summary.throughput.median, $0.summary.throughput.min, $0.summary.throughput.max) },
            xTitle: "round-trip time between every two parts", yTitle: "throughput (tx/s)")
        let p50 = ReportCharts.categoryLines(
            title: "\(view.displayName): p50 latency vs round-trip time (\(reportClientsText(smallest)))", categories: categories,
            series: series(clients: smallest) { ($0.summary.latencyMs.p50, $0.summary.latencyMs.p50, $0.summary.latencyMs.p50) },
            xTitle: "round-trip time between every two parts", yTitle: "p50 latency (ms)")
        let p99 = ReportCharts.categoryLines(
            title: "\(view.displayName): p99 latency vs round-trip time (\(reportClientsText(largest)))", categories: categories,
            series: series(clients: largest) { ($0.summary.latencyMs.p99, $0.summary.latencyMs.p99, $0.summary.latencyMs.p99) },
            xTitle: "round-trip time between every two parts", yTitle: "p99 latency (ms)")
        return figure(id: view.rttAnchor, svg: throughput, caption: "Throughput at \(esc(reportClientsText(largest))) as the network gets slower.")
            + figure(id: view.rttAnchor + "-p50", svg: p50, caption: "Median latency at \(esc(reportClientsText(smallest))): each mode's "
                + "sequential round trips times the RTT set its floor (see Which mode when).")
            + figure(id: view.rttAnchor + "-p99", svg: p99, caption: "p99 latency at \(esc(reportClientsText(largest))).")
    }

    /// Chart points from cells: value, low, high and a tooltip.
    static func points(
        _ cells: [(Int, CellResult?, String)],
        _ metric: (CellResult) -> (Double, Double, Double) = { ($0.summary.throughput.median, $0.summary.throughput.min, $0.summary.throughput.max) }
    ) -> [Int: (value: Double, low: Double, high: Double, tooltip: String)] {
        var points: [Int: (value: Double, low: Double, high: Double, tooltip: String)] = [:]
        for (index, cell, label) in cells {
            guard let cell else { continue }
            let (value, low, high) = metric(cell)
            points[index] = (value, low, high, "\(label): \(ReportFormat.grouped(value, decimals: 1))")
        }
        return points
    }

    static func latencyFigure(_ view: ReportScenarioView) -> [String] {
        let cells = view.largestCells
        let names = ["p50", "p90", "p99", "p99.9"]
        let groups = cells.map { cell -> ReportBarGroup in
            let latency = cell.summary.latencyMs
            let values = [latency.p50, latency.p90, latency.p99, latency.p999]
            let bars = zip(names, values).enumerated().map { index, pair in
                ReportBar(
                    value: pair.1, low: nil, high: nil, color: ReportModes.color(cell.mode), opacity: percentileOpacities[index],
                    tooltip: "\(cell.mode.rawValue), \(reportClientsText(cell.clients)): \(pair.0) = \(ReportFormat.ms(pair.1)) ms "
                        + "(max \(ReportFormat.ms(latency.max)) ms)")
            }
            return ReportBarGroup(label: cell.mode.rawValue, sublabel: nil, bars: bars)
        }
        let positives = groups.flatMap { $0.bars.map(\.value) }.filter { $0.isFinite && $0 > 0 }
        let logScale = positives.min().map { low in (positives.max() ?? low) / low > 50 } ?? false
        let legend = zip(names, percentileOpacities).map { ReportLegendItem(label: $0.0, color: "#333333", opacity: $0.1) }
        let svg = ReportCharts.groupedBars(
            title: "\(view.displayName): latency percentiles \(view.largestCaption)", groups: groups, legend: legend,
            xTitle: "mode", yTitle: logScale ? "latency (ms, log scale)" : "latency (ms)", logScale: logScale)
        let scaleNote = logScale ? " The y axis is logarithmic (the values span more than 50×)." : ""
        return figure(id: view.latencyAnchor, svg: svg, caption: "Latency percentiles \(esc(view.largestCaption)): per mode, bars for p50, p90, "
            + "p99 and p99.9 (lighter = lower percentile).\(scaleNote) Hover a bar for its value.")
    }

    static func outcomesFigure(_ view: ReportScenarioView) -> [String] {
        let rows = view.largestCells.map { cell in
            let values = ReportOutcomes.values(cell.summary.outcomes)
            let segments = zip(ReportOutcomes.names, values).map { (name: $0.0, value: $0.1, color: ReportOutcomes.color($0.0)) }
            return ReportStackRow(label: cell.mode.rawValue, sublabel: nil, segments: segments)
        }
        let legend = ReportOutcomes.names.map { ReportLegendItem(label: $0, color: ReportOutcomes.color($0)) }
        let svg = ReportCharts.stackedShares(title: "\(view.displayName): outcomes \(view.largestCaption)", rows: rows, legend: legend)
        return figure(id: view.outcomesAnchor, svg: svg, caption: "Outcomes \(esc(view.largestCaption)), as shares of each mode's "
            + "transactions; n is the number of transactions. Hover a segment for its count.")
    }

    static func recoverySection(_ view: ReportScenarioView) -> [String] {
        var out = ["<h3 id=\"\(esc(view.recoveryAnchor))\">Recovery</h3>"]
        out.append("<table class=\"recovery\"><thead><tr><th>Mode</th><th class=\"num\">RTT</th><th class=\"num\">Run</th><th>Fault</th><th class=\"num\">Fault at</th>"
            + "<th class=\"num\">Recovery</th><th>Invariants</th></tr></thead><tbody>")
        for timeline in view.recoveries {
            let values = recoveryValues(timeline)
            let recovery = timeline.resolvedAtSeconds == nil && timeline.recoverySeconds == nil
                ? "<span class=\"bad\">not resolved</span>" : esc(values[5])
            out.append("<tr><td>\(modeHTML(timeline.mode))</td><td class=\"num\">\(esc(values[1]))</td><td class=\"num\">\(esc(values[2]))</td>"
                + "<td>\(esc(timeline.fault))</td><td class=\"num\">\(esc(values[4]))</td><td class=\"num\">\(recovery)</td>"
                + "<td>\(invariantsHTML(timeline.invariantsHeld))</td></tr>")
        }
        out.append("</tbody></table>")
        out.append("<p class=\"note\">\(esc(recoveryCaption)) Below, completed transactions per second over the "
            + "run; dashed red: the fault; green: resolved.</p>")
        out.append("<div class=\"timelines\">")
        for timeline in view.recoveries {
            out.append("<figure class=\"timeline\">")
            out.append(ReportCharts.recoveryTimeline(timeline, color: ReportModes.color(timeline.mode)))
            out.append("<figcaption>\(modeHTML(timeline.mode)), \(esc(recoveryPlace(timeline))) — \(esc(timeline.fault))</figcaption>")
            out.append("</figure>")
        }
        out.append("</div>")
        return out
    }

    static let css = """
        :root { color-scheme: light; }
        * { box-sizing: border-box; }
        body { margin: 0; background: #ffffff; color: #222222;
               font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
        main { max-width: 1560px; margin: 0 auto; padding: 24px 28px 64px; }
        h1 { font-size: 28px; margin: 0 0 4px; }
        h2 { font-size: 22px; margin: 44px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e4e4e4; }
        h3 { font-size: 17px; margin: 26px 0 8px; }
        p { max-width: 980px; }
        a { color: #0060a0; }
        code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 0.9em;
               background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
        .meta { color: #555555; margin-top: 0; }
        nav { margin: 12px 0 8px; padding: 8px 12px; background: #f7f7f7; border-radius: 6px; font-size: 14px; }
        table { border-collapse: collapse; font-size: 13px; margin: 8px 0 12px; }
        caption { text-align: left; font-weight: 600; padding: 4px 0; }
        th, td { padding: 4px 9px; border-bottom: 1px solid #e6e6e6; text-align: left; vertical-align: top; }
        thead th { background: #f4f4f4; font-weight: 600; border-bottom: 1px solid #cfcfcf; }
        th.group { text-align: center; border-left: 1px solid #dddddd; border-right: 1px solid #dddddd; }
        th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
        tbody th { font-weight: 600; background: #fafafa; }
        tr.first td { border-top: 1px solid #bdbdbd; }
        table.summary { font-size: 12.5px; }
        table.summary th, table.summary td { padding: 3px 6px; white-space: nowrap; }
        table.summary td:first-child, table.summary thead tr:first-child th:first-child { position: sticky; left: 0; z-index: 1; }
        table.summary td:first-child { background: #ffffff; }
        .glance td { white-space: nowrap; }
        td.warn { color: #b04000; font-weight: 600; }
        .sub { font-weight: 400; color: #666666; }
        .scroll { overflow-x: auto; max-width: 100%; }
        .pair { display: flex; flex-wrap: wrap; gap: 8px 40px; align-items: flex-start; }
        .chip { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px;
                -webkit-print-color-adjust: exact; print-color-adjust: exact; }
        .mode { white-space: nowrap; }
        .ok { color: #1a7f37; white-space: nowrap; }
        .bad { color: #c00000; font-weight: 600; white-space: nowrap; }
        .note { color: #555555; font-size: 13px; }
        .description { font-size: 15px; }
        .violations { border-left: 4px solid #c00000; background: #fff5f5; padding: 6px 12px; margin: 8px 0 16px; }
        .violations ul { margin: 4px 0; padding-left: 20px; }
        figure { margin: 14px 0 30px; }
        figure svg { display: block; max-width: 900px; border: 1px solid #eeeeee; border-radius: 4px; }
        figcaption { font-size: 13px; color: #555555; margin-top: 6px; max-width: 900px; }
        .timelines { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 8px 24px; }
        .timelines figure { margin: 6px 0 12px; }
        @media print { .scroll { overflow: visible; } figure { break-inside: avoid; } }
        """
}
