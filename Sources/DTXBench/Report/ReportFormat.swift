import Foundation

/// Number formatting and text escaping shared by the Markdown and HTML reports.
enum ReportFormat {
    /// What a table shows for a missing or non-finite value.
    static let missing = "—"

    /// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values (also valid inside inline SVG).
    static func html(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }

    /// Makes text safe for one Markdown table cell: no pipes, no line breaks, no raw HTML tags.
    static func markdownCell(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "|": out += "\\|"
            case "<": out += "&lt;"
            case "\n", "\r", "\r\n": out += " "
            default: out.append(character)
            }
        }
        return out
    }

    /// `value` with `decimals` decimals and thousands separators ("12,345.6"); `missing` when not finite.
    static func grouped(_ value: Double, decimals: Int) -> String {
        guard value.isFinite else { return missing }
        let places = max(0, min(decimals, 6))
        let digits = String(format: "%.\(places)f", abs(value))
        let parts = digits.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let integer = Array(parts.first.map(String.init) ?? "0")
        var withCommas = ""
        for (index, digit) in integer.enumerated() {
            if index > 0 && (integer.count - index) % 3 == 0 { withCommas += "," }
            withCommas.append(digit)
        }
        let fraction = parts.count > 1 ? "." + parts[1] : ""
        let isZero = digits.allSatisfy { $0 == "0" || $0 == "." }
        return (value < 0 && !isZero ? "-" : "") + withCommas + fraction
    }

    /// An integer count with thousands separators.
    static func count(_ value: Int) -> String {
        grouped(Double(value), decimals: 0)
    }

    /// Transactions per second: no decimals from 100 up, one below.
    static func throughput(_ value: Double) -> String {
        guard value.isFinite else { return missing }
        return grouped(value, decimals: abs(value) >= 100 ? 0 : 1)
    }

    /// "median (min–max)" of a throughput spread.
    static func throughputSpread(_ spread: Spread) -> String {
        guard spread.median.isFinite else { return missing }
        guard spread.min.isFinite, spread.max.isFinite else { return throughput(spread.median) }
        return "\(throughput(spread.median)) (\(throughput(spread.min))–\(throughput(spread.max)))"
    }

    /// A round-trip time: "5ms", "0.5ms".
    static func rtt(_ milliseconds: Double) -> String {
        milliseconds == milliseconds.rounded() ? "\(Int(milliseconds))ms" : String(format: "%gms", milliseconds)
    }

    /// Milliseconds: one decimal, two below 1 ms.
    static func ms(_ value: Double) -> String {
        guard value.isFinite else { return missing }
        return grouped(value, decimals: abs(value) < 1 ? 2 : 1)
    }

    /// A throughput ratio such as "0.52×"; `missing` when nil or not finite.
    static func ratio(_ value: Double?) -> String {
        guard let value, value.isFinite else { return missing }
        return String(format: "%.2f×", value)
    }

    /// CPU seconds: two decimals (three when tiny).
    static func cpu(_ value: Double?) -> String {
        guard let value, value.isFinite else { return missing }
        if value != 0 && abs(value) < 0.01 { return String(format: "%.3f", value) }
        return grouped(value, decimals: 2)
    }

    /// Seconds with one decimal, e.g. "12.3 s".
    static func seconds(_ value: Double?) -> String {
        guard let value, value.isFinite else { return missing }
        return grouped(value, decimals: 1) + " s"
    }

    /// A share in percent: one decimal below 10 %, none above.
    /// Never rounds a partial share to "0%" or "100%".
    static func percent(_ part: Double, of total: Double) -> String {
        guard total > 0, part.isFinite, total.isFinite else { return missing }
        let share = part / total * 100
        if share > 0 && share < 0.1 { return "<0.1%" }
        if share > 99.9 && share < 100 { return ">99.9%" }
        let fine = (share > 0 && share < 10) || (share > 99 && share < 100)
        return String(format: fine ? "%.1f%%" : "%.0f%%", share)
    }

    /// An axis tick label: as many decimals as the tick step needs.
    static func tick(_ value: Double, step: Double) -> String {
        guard value.isFinite else { return "" }
        guard step.isFinite, step > 0 else { return grouped(value, decimals: 0) }
        let decimals = max(0, Int(-floor(log10(step) + 1e-9)))
        return grouped(value, decimals: decimals)
    }

    /// Shortens `text` to at most `limit` characters, ending in "…" when cut.
    static func truncated(_ text: String, to limit: Int) -> String {
        if text.count <= limit { return text }
        if limit <= 1 { return "…" }
        return String(text.prefix(limit - 1)) + "…"
    }
}

/// The colours of the benchmark modes and the order of the CPU columns.
enum ReportModes {
    /// Okabe-Ito colours, the same in every chart; a batched row a lighter shade of its protocol's.
    static func color(_ mode: BenchMode) -> String {
        switch mode {
        case .pgbenchLocal: "#000000"
        case .pgbench2PC: "#882255"
        case .local: "#999999"
        case .direct: "#555555"
        case .tcc: "#0072B2"
        case .tccBatch: "#56B4E9"
        case .saga: "#D55E00"
        case .sagaBatch: "#E69F00"
        case .xa: "#009E73"
        case .xaBatch: "#44CC99"
        }
    }

    /// Process keys of the CPU columns, in a fixed order, then any others alphabetically.
    static func orderedProcesses<S: Sequence>(_ processes: S) -> [String] where S.Element == String {
        let fixed = [
            "coordinator", "ServiceA", "ServiceB", "postgres", "postgres-coordinator", "postgres-ServiceA", "postgres-ServiceB", "loadgen",
            "relay",
        ]
        let unique = Set(processes)
        return fixed.filter { unique.contains($0) } + unique.subtracting(fixed).sorted()
    }
}

/// Outcome categories with their colours, in stacking order.
enum ReportOutcomes {
    static let names = ["completed", "failed", "compensated", "pending", "errors"]

    static func color(_ name: String) -> String {
        switch name {
        case "completed": return "#56B4E9"
        case "failed": return "#D55E00"
        case "compensated": return "#CC79A7"
        case "pending": return "#F0E442"
        default: return "#000000"
        }
    }

    static func values(_ outcomes: Outcomes) -> [Int] {
        [outcomes.completed, outcomes.failed, outcomes.compensated, outcomes.pending, outcomes.errors]
    }
}
