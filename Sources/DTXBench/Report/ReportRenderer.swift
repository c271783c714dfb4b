import Foundation

/// Turns the results of one `dtx bench` invocation into `report.md` and `report.html`.
///
/// Both reports hold the same tables; the charts exist only in the HTML file (inline SVG), and the Markdown report
/// links to them by anchor (`report.html#<scenario>-throughput`, `-latency`, `-outcomes`, `-recovery`).
public enum ReportRenderer {
    static let title = "dtx benchmark: TCC vs Saga vs XA"
    static let htmlFileName = "report.html"
    static let percentileOpacities = [0.35, 0.55, 0.78, 1.0]

    /// report.md: Markdown tables and links to the charts (the charts are in report.html; link to it with anchors).
    public static func markdown(_ results: BenchResults) -> String {
        let views = ReportScenarioView.all(results)
        var out: [String] = []
        out.append("# \(title)")
        out.append("")
        out.append("The charts are in [\(htmlFileName)](\(htmlFileName)), a single self-contained file that opens offline.")
        out.append("")
        out.append("## How to read this")
        out.append("")
        out.append(howToRead(results.settings))
        out.append("")
        out.append("## At a glance")
        out.append("")
        out += markdownGlance(views)
        out.append("")
        out.append("## Environment")
        out.append("")
        out += markdownTable(header: ["Item", "Value"], alignRight: [], rows: environmentRows(results.environment))
        if !results.environment.postgresSettings.isEmpty {
            out.append("")
            out.append("PostgreSQL settings:")
            out.append("")
            let settings = results.environment.postgresSettings.sorted { $0.key < $1.key }.map { [$0.key, $0.value] }
            out += markdownTable(header: ["Setting", "Value"], alignRight: [], rows: settings)
        }
        out.append("")
        out.append("## Settings")
        out.append("")
        out += markdownTable(header: ["Setting", "Value"], alignRight: [], rows: settingsRows(results.settings))
        for view in views {
            out.append("")
            out += markdownScenario(view, settings: results.settings)
        }
        if views.isEmpty {
            out.append("")
            out.append("_No scenarios were run._")
        }
        out.append("")
        return out.joined(separator: "\n")
    }

    /// report.html: ONE self-contained HTML file (inline CSS, inline SVG charts, no JavaScript needed, no external URLs),
    /// readable offline.
    public static func html(_ results: BenchResults) -> String {
        let views = ReportScenarioView.all(results)
        let environment = results.environment
        var out: [String] = []
        out.append("<!DOCTYPE html>")
        out.append("<html lang=\"en\">")
        out.append("<head>")
        out.append("<meta charset=\"utf-8\">")
        out.append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        out.append("<title>\(esc(title))</title>")
        out.append("<style>\n\(css)\n</style>")
        out.append("</head>")
        out.append("<body>")
        out.append("<main>")
        out.append("<h1 id=\"top\">\(esc(title))</h1>")
        out.append("<p class=\"meta\">\(esc(environment.startedAt)) – \(esc(environment.finishedAt)) · commit <code>"
            + "\(esc(environment.gitCommit))</code> · \(esc(environment.buildConfiguration)) build · \(esc(environment.cpuModel))</p>")

        out.append("<nav id=\"contents\"><strong>Contents:</strong> <a href=\"#how-to-read\">How to read this</a> · "
            + "<a href=\"#at-a-glance\">At a glance</a> · <a href=\"#environment\">Environment</a> · "
            + "<a href=\"#settings\">Settings</a>"
            + views.map { " · <a href=\"#\(esc($0.anchor))\">\(esc($0.displayName))</a>" }.joined()
            + "</nav>")

        out.append("<section id=\"how-to-read\">")
        out.append("<h2>How to read this</h2>")
        out.append("<p>\(inlineHTML(howToRead(results.settings)))</p>")
        out.append("</section>")

        out.append("<section id=\"at-a-glance\">")
        out.append("<h2>At a glance</h2>")
        out += htmlGlance(views)
        out.append("</section>")

        out.append("<section id=\"environment\">")
        out.append("<h2>Environment</h2>")
        out.append("<div class=\"pair\">")
        out += htmlKeyValueTable(environmentRows(environment), caption: nil)
        if !environment.postgresSettings.isEmpty {
            let settings = environment.postgresSettings.sorted { $0.key < $1.key }.map { [$0.key, $0.value] }
            out += htmlKeyValueTable(settings, caption: "PostgreSQL settings", header: ["Setting", "Value"])
        }
        out.append("</div>")
        out.append("</section>")

        out.append("<section id=\"settings\">")
        out.append("<h2>Settings</h2>")
        out += htmlKeyValueTable(settingsRows(results.settings), caption: nil)
        out.append("</section>")

        for view in views {
            out += htmlScenario(view, settings: results.settings)
        }
        if views.isEmpty {
            out.append("<p><em>No scenarios were run.</em></p>")
        }
        out.append("</main>")
        out.append("</body>")
        out.append("</html>")
        out.append("")
        return out.joined(separator: "\n")
    }

    // MARK: - Shared text

    static func esc(_ text: String) -> String {
        ReportFormat.html(text)
    }

    /// The "How to read this" paragraph, in Markdown inline syntax (backticks and **bold** only).
    static func howToRead(_ settings: BenchSettings) -> String {
        let runs = settings.repeats == 1 ? "once" : "\(settings.repeats) times"
        return "Each cell is one mode at one number of concurrent clients, measured for "
            + "\(ReportFormat.seconds(settings.durationSeconds)) after a \(ReportFormat.seconds(settings.warmupSeconds)) warm-up, "
            + "\(runs) (\(loadText(settings))). Numbers are the **median** of those runs, with min–max in brackets and as "
            + "whiskers in the charts. **vs local** is the throughput ratio to `local`, the floor: both stock decrements in one "
            + "local PostgreSQL transaction. **vs direct** is the ratio to `direct`: the client calls both participants' reserve "
            + "itself — no coordinator, no atomicity. `tcc`, `saga` and `xa` pay for atomicity, so their ratio to `direct` is "
            + "the price of it (1.00× = free). Latencies are end to end per global transaction, in ms. CPU is CPU seconds per "
            + "1,000 global transactions, per process. Absolute numbers depend on the machine: compare the ratios of one run, "
            + "not tx/s across machines."
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
            ["Repeats per cell", String(settings.repeats)],
            ["Duration per run", ReportFormat.seconds(settings.durationSeconds)],
            ["Warm-up", ReportFormat.seconds(settings.warmupSeconds)],
            ["Loop", settings.loop],
        ]
        if let rate = settings.rate {
            rows.append(["Arrival rate", ReportFormat.throughput(rate) + " requests/s"])
        }
        return rows
    }

    static func invariantsText(_ held: Bool) -> String {
        held ? "✔ held" : "✘ violated"
    }

    /// The cells of the summary table after mode and clients: throughput, ratios, latency, outcomes, retries, CPU.
    static func summaryValues(_ cell: CellResult, processes: [String]) -> [String] {
        let summary = cell.summary
        let latency = summary.latencyMs
        var values = [
            ReportFormat.throughputSpread(summary.throughput),
            ReportFormat.ratio(summary.ratioToLocal),
            ReportFormat.ratio(summary.ratioToDirect),
            ReportFormat.ms(latency.p50), ReportFormat.ms(latency.p90), ReportFormat.ms(latency.p99),
            ReportFormat.ms(latency.p999), ReportFormat.ms(latency.max),
        ]
        values += ReportOutcomes.values(summary.outcomes).map(ReportFormat.count)
        values.append(ReportFormat.count(summary.retries))
        values += processes.map { ReportFormat.cpu(summary.cpuSecondsPer1000[$0]) }
        return values
    }

    static let latencyHeaders = ["p50", "p90", "p99", "p99.9", "max"]

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
        var rows: [[String]] = []
        var previous: String?
        for row in ReportGlanceRow.rows(views) {
            let scenario = previous == row.view.anchor ? "" : row.view.displayName
            previous = row.view.anchor
            rows.append(glanceValues(row, scenario: scenario))
        }
        var lines = markdownTable(
            header: ["Scenario", "Mode", "Best vs direct", "Throughput at largest client count", "Invariants (every cell)"],
            alignRight: [2, 3], rows: rows)
        lines.append("")
        lines.append("Best vs direct: the highest ratio to `direct` over all client counts. Invariants include the recovery runs.")
        return lines
    }

    static func glanceValues(_ row: ReportGlanceRow, scenario: String) -> [String] {
        guard let mode = row.mode else {
            return [scenario, "(baselines only)", ReportFormat.missing, ReportFormat.missing, invariantsText(row.invariantsHeld)]
        }
        let best = row.bestRatioToDirect.map { ratio in
            ReportFormat.ratio(ratio) + (row.bestRatioClients.map { " (\(reportClientsText($0)))" } ?? "")
        } ?? ReportFormat.missing
        let throughput = row.largest.flatMap { cell in
            cell.summary.throughput.median.isFinite
                ? "\(ReportFormat.throughput(cell.summary.throughput.median)) tx/s (\(reportClientsText(cell.clients)))" : nil
        } ?? ReportFormat.missing
        return [scenario, mode, best, throughput, invariantsText(row.invariantsHeld)]
    }

    static func summaryHeader(processes: [String]) -> [String] {
        ["Mode", "Clients", "tx/s median (min–max)", "vs local", "vs direct"]
            + latencyHeaders.map { "\($0) ms" }
            + ReportOutcomes.names
            + ["retries"]
            + processes.map { "CPU s/1k tx \($0)" }
            + ["Invariants"]
    }

    static func markdownScenario(_ view: ReportScenarioView, settings: BenchSettings) -> [String] {
        let scenario = view.scenario
        var out = ["## Scenario: \(view.displayName)", ""]
        if !scenario.description.isEmpty {
            out.append(scenario.description)
            out.append("")
        }
        if view.parameters.isEmpty {
            out.append("_No parameters._")
        } else {
            out += markdownTable(header: ["Parameter", "Value"], alignRight: [], rows: view.parameters.map { [$0.key, $0.value] })
        }
        out.append("")
        out.append("### Summary")
        out.append("")
        if view.rows.isEmpty {
            out.append("_No cells were measured._")
        } else {
            let header = summaryHeader(processes: view.processes)
            let rows = view.rows.map { cell in
                [cell.mode, String(cell.clients)] + summaryValues(cell, processes: view.processes) + [invariantsText(cell.summary.invariantsHeld)]
            }
            out += markdownTable(header: header, alignRight: Set(1..<(header.count - 1)), rows: rows)
            out.append("")
            out.append("Latency in ms; outcomes are counts; CPU is CPU seconds per 1,000 global transactions, per process.")
        }
        let violations = view.violations
        if !violations.isEmpty {
            out.append("")
            out.append("**Invariant violations:**")
            out.append("")
            out += violations.map { "- " + $0.replacingOccurrences(of: "\n", with: " ") }
        }
        if !view.rows.isEmpty {
            out.append("")
            out.append("### Charts")
            out.append("")
            out.append("- Throughput vs clients: see \(markdownLink(view.throughputAnchor))")
            out.append("- Latency percentiles \(view.largestCaption): see \(markdownLink(view.latencyAnchor))")
            out.append("- Outcomes \(view.largestCaption): see \(markdownLink(view.outcomesAnchor))")
        }
        if !scenario.recoveries.isEmpty {
            out.append("")
            out.append("### Recovery")
            out.append("")
            out += markdownTable(
                header: ["Mode", "Fault", "Fault at", "Recovery", "Invariants"], alignRight: [2, 3],
                rows: view.recoveries.map(recoveryValues))
            out.append("")
            out.append("Recovery: seconds from the fault (SIGKILL) until every global transaction begun before it had its final outcome "
                + "(down time included); invariants: the check after the run. Throughput timelines: see \(markdownLink(view.recoveryAnchor))")
        }
        return out
    }

    static func recoveryValues(_ timeline: RecoveryTimeline) -> [String] {
        let unresolved = timeline.resolvedAtSeconds == nil ? "not resolved" : ReportFormat.missing
        let recovery = timeline.recoverySeconds.map { ReportFormat.seconds($0) } ?? unresolved
        return [timeline.mode, timeline.fault, ReportFormat.seconds(timeline.faultAtSeconds), recovery, invariantsText(timeline.invariantsHeld)]
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

    static func modeHTML(_ mode: String) -> String {
        "<span class=\"mode\"><span class=\"chip\" style=\"background:\(ReportModes.color(mode))\"></span>\(esc(mode))</span>"
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
        var out = ["<div class=\"scroll\"><table class=\"glance\">"]
        out.append("<thead><tr><th>Scenario</th><th>Mode</th><th class=\"num\">Best vs direct</th>"
            + "<th class=\"num\">Throughput at largest client count</th><th>Invariants (every cell)</th></tr></thead>")
        out.append("<tbody>")
        let rows = ReportGlanceRow.rows(views)
        var index = 0
        while index < rows.count {
            let anchor = rows[index].view.anchor
            let group = rows[index...].prefix { $0.view.anchor == anchor }
            for (offset, row) in group.enumerated() {
                let values = glanceValues(row, scenario: "")
                var line = "<tr\(offset == 0 ? " class=\"first\"" : "")>"
                if offset == 0 {
                    line += "<td rowspan=\"\(group.count)\"><a href=\"#\(esc(anchor))\">\(esc(row.view.displayName))</a></td>"
                }
                line += "<td>\(row.mode.map(modeHTML) ?? esc(values[1]))</td>"
                line += "<td class=\"num\">\(esc(values[2]))</td><td class=\"num\">\(esc(values[3]))</td>"
                line += "<td>\(invariantsHTML(row.invariantsHeld))</td></tr>"
                out.append(line)
            }
            index += group.count
        }
        out.append("</tbody></table></div>")
        out.append("<p class=\"note\">Best vs direct: the highest ratio to <code>direct</code> over all client counts. "
            + "Invariants include the recovery runs.</p>")
        return out
    }

    static func htmlScenario(_ view: ReportScenarioView, settings: BenchSettings) -> [String] {
        let scenario = view.scenario
        var out = ["<section class=\"scenario\" id=\"\(esc(view.anchor))\">"]
        out.append("<h2>Scenario: \(esc(view.displayName))</h2>")
        if !scenario.description.isEmpty {
            out.append("<p class=\"description\">\(esc(scenario.description))</p>")
        }
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
            out += latencyFigure(view)
            out += outcomesFigure(view)
        }
        if !scenario.recoveries.isEmpty {
            out += recoverySection(view)
        }
        out.append("</section>")
        return out
    }

    static func htmlSummaryTable(_ view: ReportScenarioView) -> [String] {
        let processes = view.processes
        var out = ["<div class=\"scroll\"><table class=\"summary\">", "<thead>"]
        var first = "<tr><th rowspan=\"2\">Mode</th><th rowspan=\"2\" class=\"num\">Clients</th>"
        first += "<th rowspan=\"2\" class=\"num\">tx/s<br><span class=\"sub\">median (min–max)</span></th>"
        first += "<th rowspan=\"2\" class=\"num\">vs local</th><th rowspan=\"2\" class=\"num\">vs direct</th>"
        first += "<th colspan=\"5\" class=\"group\">Latency (ms)</th><th colspan=\"5\" class=\"group\">Outcomes</th>"
        first += "<th rowspan=\"2\" class=\"num\">Retries</th>"
        if !processes.isEmpty {
            first += "<th colspan=\"\(processes.count)\" class=\"group\">CPU s per 1,000 tx</th>"
        }
        first += "<th rowspan=\"2\">Invariants</th></tr>"
        out.append(first)
        let second = (latencyHeaders + ReportOutcomes.names + processes).map { "<th class=\"num\">\(esc($0))</th>" }.joined()
        out.append("<tr>\(second)</tr>")
        out.append("</thead>")
        out.append("<tbody>")
        var previousMode: String?
        for cell in view.rows {
            let values = summaryValues(cell, processes: processes)
            let firstOfMode = previousMode != cell.mode
            previousMode = cell.mode
            var line = "<tr\(firstOfMode ? " class=\"first\"" : "")><td>\(modeHTML(cell.mode))</td>"
            line += "<td class=\"num\">\(cell.clients)</td>"
            for (index, value) in values.enumerated() {
                if index == 0 {
                    let spread = cell.summary.throughput
                    let range = spread.median.isFinite && spread.min.isFinite && spread.max.isFinite
                        ? " <span class=\"sub\">(\(esc(ReportFormat.throughput(spread.min)))–\(esc(ReportFormat.throughput(spread.max))))</span>"
                        : ""
                    line += "<td class=\"num\"><strong>\(esc(ReportFormat.throughput(spread.median)))</strong>\(range)</td>"
                    continue
                }
                // Highlight non-zero failure columns (failed, compensated, pending, errors).
                let isFailure = (9...12).contains(index) && value != "0"
                line += "<td class=\"num\(isFailure ? " warn" : "")\">\(esc(value))</td>"
            }
            line += "<td>\(invariantsHTML(cell.summary.invariantsHeld))</td></tr>"
            out.append(line)
        }
        out.append("</tbody></table></div>")
        out.append("<p class=\"note\">Latency in ms, end to end. Outcomes are counts. CPU is CPU seconds per 1,000 global "
            + "transactions, per process. — means not measured or not applicable.</p>")
        return out
    }

    static func figure(id: String, svg: String, caption: String) -> [String] {
        ["<figure id=\"\(esc(id))\">", svg, "<figcaption>\(caption)</figcaption>", "</figure>"]
    }

    static func throughputFigure(_ view: ReportScenarioView, settings: BenchSettings) -> [String] {
        let runs = settings.repeats == 1 ? "1 run" : "\(settings.repeats) runs"
        let yTitle = "throughput (tx/s, median of \(runs))"
        let chartTitle = "\(view.displayName): throughput vs clients"
        let svg: String
        let caption: String
        if view.clientCounts.count > 1 {
            let categories = view.clientCounts.map(String.init)
            let series = view.modes.map { mode in
                var points: [Int: (value: Double, low: Double, high: Double, tooltip: String)] = [:]
                for (index, clients) in view.clientCounts.enumerated() {
                    guard let cell = view.cell(mode: mode, clients: clients) else { continue }
                    let spread = cell.summary.throughput
                    let tooltip = "\(mode), \(reportClientsText(clients)): \(ReportFormat.throughputSpread(spread)) tx/s"
                    points[index] = (spread.median, spread.min, spread.max, tooltip)
                }
                return ReportLineSeries(name: mode, color: ReportModes.color(mode), dashed: ReportModes.isBaseline(mode), points: points)
            }
            svg = ReportCharts.categoryLines(
                title: chartTitle, categories: categories, series: series, xTitle: "concurrent clients", yTitle: yTitle)
            caption = "Throughput vs concurrent clients (evenly spaced): median of \(runs); whiskers show min–max. "
                + "Dashed lines are the baselines <code>local</code> and <code>direct</code>."
        } else {
            let clients = view.clientCounts.first ?? 0
            let groups = view.modes.compactMap { mode -> ReportBarGroup? in
                guard let cell = view.cell(mode: mode, clients: clients) else { return nil }
                let spread = cell.summary.throughput
                let bar = ReportBar(
                    value: spread.median, low: spread.min, high: spread.max, color: ReportModes.color(mode),
                    tooltip: "\(mode), \(reportClientsText(clients)): \(ReportFormat.throughputSpread(spread)) tx/s",
                    valueLabel: ReportFormat.throughput(spread.median))
                return ReportBarGroup(label: mode, sublabel: nil, bars: [bar])
            }
            svg = ReportCharts.groupedBars(
                title: chartTitle, groups: groups, legend: [], xTitle: "mode (\(reportClientsText(clients)))", yTitle: yTitle,
                logScale: false)
            caption = "Throughput at \(esc(reportClientsText(clients))) (the only client count run): median of \(runs); "
                + "whiskers show min–max."
        }
        return figure(id: view.throughputAnchor, svg: svg, caption: caption)
    }

    static func latencyFigure(_ view: ReportScenarioView) -> [String] {
        let cells = view.largestCells
        let uniform = Set(cells.map(\.clients)).count <= 1
        let names = ["p50", "p90", "p99", "p99.9"]
        let groups = cells.map { cell -> ReportBarGroup in
            let latency = cell.summary.latencyMs
            let values = [latency.p50, latency.p90, latency.p99, latency.p999]
            let bars = zip(names, values).enumerated().map { index, pair in
                ReportBar(
                    value: pair.1, low: nil, high: nil, color: ReportModes.color(cell.mode), opacity: percentileOpacities[index],
                    tooltip: "\(cell.mode), \(reportClientsText(cell.clients)): \(pair.0) = \(ReportFormat.ms(pair.1)) ms "
                        + "(max \(ReportFormat.ms(latency.max)) ms)")
            }
            return ReportBarGroup(label: cell.mode, sublabel: uniform ? nil : reportClientsText(cell.clients), bars: bars)
        }
        let positives = groups.flatMap { $0.bars.map(\.value) }.filter { $0.isFinite && $0 > 0 }
        let logScale: Bool
        if let low = positives.min(), let high = positives.max(), low > 0 {
            logScale = high / low > 50
        } else {
            logScale = false
        }
        let legend = zip(names, percentileOpacities).map { ReportLegendItem(label: $0.0, color: "#333333", opacity: $0.1) }
        let svg = ReportCharts.groupedBars(
            title: "\(view.displayName): latency percentiles \(view.largestCaption)", groups: groups, legend: legend,
            xTitle: uniform ? "mode (\(view.largestCaption.replacingOccurrences(of: "at ", with: "")))" : "mode",
            yTitle: logScale ? "latency (ms, log scale)" : "latency (ms)", logScale: logScale)
        let scaleNote = logScale ? " The y axis is logarithmic (the values span more than 50×)." : ""
        let caption = "Latency percentiles \(esc(view.largestCaption)): per mode, bars for p50, p90, p99 and p99.9 "
            + "(lighter = lower percentile).\(scaleNote) Hover a bar for its value."
        return figure(id: view.latencyAnchor, svg: svg, caption: caption)
    }

    static func outcomesFigure(_ view: ReportScenarioView) -> [String] {
        let cells = view.largestCells
        let uniform = Set(cells.map(\.clients)).count <= 1
        let rows = cells.map { cell in
            let values = ReportOutcomes.values(cell.summary.outcomes)
            let segments = zip(ReportOutcomes.names, values).map { (name: $0.0, value: $0.1, color: ReportOutcomes.color($0.0)) }
            return ReportStackRow(label: cell.mode, sublabel: uniform ? nil : reportClientsText(cell.clients), segments: segments)
        }
        let legend = ReportOutcomes.names.map { ReportLegendItem(label: $0, color: ReportOutcomes.color($0)) }
        let svg = ReportCharts.stackedShares(title: "\(view.displayName): outcomes \(view.largestCaption)", rows: rows, legend: legend)
        let caption = "Outcomes \(esc(view.largestCaption)), as shares of each mode's transactions; "
            + "n is the number of transactions. Hover a segment for its count."
        return figure(id: view.outcomesAnchor, svg: svg, caption: caption)
    }

    static func recoverySection(_ view: ReportScenarioView) -> [String] {
        var out = ["<h3 id=\"\(esc(view.recoveryAnchor))\">Recovery</h3>"]
        out.append("<table class=\"recovery\"><thead><tr><th>Mode</th><th>Fault</th><th class=\"num\">Fault at</th>"
            + "<th class=\"num\">Recovery</th><th>Invariants</th></tr></thead><tbody>")
        for timeline in view.recoveries {
            let values = recoveryValues(timeline)
            let recovery = timeline.resolvedAtSeconds == nil && timeline.recoverySeconds == nil
                ? "<span class=\"bad\">not resolved</span>" : esc(values[3])
            out.append("<tr><td>\(modeHTML(timeline.mode))</td><td>\(esc(timeline.fault))</td><td class=\"num\">\(esc(values[2]))</td>"
                + "<td class=\"num\">\(recovery)</td><td>\(invariantsHTML(timeline.invariantsHeld))</td></tr>")
        }
        out.append("</tbody></table>")
        out.append("<p class=\"note\">Recovery: seconds from the fault (SIGKILL) until every global transaction begun before it "
            + "had its final outcome (down time included); invariants: the check after the run. Below, completed transactions per "
            + "second over the run; dashed red: the fault; green: resolved.</p>")
        out.append("<div class=\"timelines\">")
        for timeline in view.recoveries {
            out.append("<figure class=\"timeline\">")
            out.append(ReportCharts.recoveryTimeline(timeline, color: ReportModes.color(timeline.mode)))
            out.append("<figcaption>\(modeHTML(timeline.mode)) — \(esc(timeline.fault))</figcaption>")
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
