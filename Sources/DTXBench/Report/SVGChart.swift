import Foundation

/// SVG building blocks: every number goes through `num`, so no NaN or infinity ever reaches the markup.
enum ReportSVG {
    static let fontFamily = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif"
    static let axisColor = "#444444"
    static let gridColor = "#e3e3e3"
    static let textColor = "#222222"
    static let mutedColor = "#666666"

    /// A coordinate or length with at most one decimal; 0 when not finite.
    static func num(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        let rounded = (value * 10).rounded() / 10
        if rounded == rounded.rounded() { return String(Int(rounded)) }
        return String(format: "%.1f", rounded)
    }

    /// The outer `<svg>` element: fixed viewBox, scales to its container.
    static func document(width: Double, height: Double, title: String, body: [String]) -> String {
        let w = num(width)
        let h = num(height)
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(w) \(h)\" width=\"100%\" role=\"img\" "
        out += "preserveAspectRatio=\"xMidYMid meet\" font-family=\"\(ReportFormat.html(fontFamily))\" font-size=\"12\">\n"
        out += "<title>\(ReportFormat.html(title))</title>\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(w)\" height=\"\(h)\" fill=\"#ffffff\"/>\n"
        out += body.joined(separator: "\n")
        out += "\n</svg>"
        return out
    }

    static func text(
        _ content: String, x: Double, y: Double, anchor: String = "start", size: Double = 12,
        fill: String = textColor, weight: String? = nil, rotate: Bool = false, title: String? = nil
    ) -> String {
        var attributes = "x=\"\(num(x))\" y=\"\(num(y))\" text-anchor=\"\(anchor)\" font-size=\"\(num(size))\" fill=\"\(fill)\""
        if let weight { attributes += " font-weight=\"\(weight)\"" }
        if rotate { attributes += " transform=\"rotate(-90 \(num(x)) \(num(y)))\"" }
        let tooltip = title.map { "<title>\(ReportFormat.html($0))</title>" } ?? ""
        return "<text \(attributes)>\(tooltip)\(ReportFormat.html(content))</text>"
    }

    static func line(
        x1: Double, y1: Double, x2: Double, y2: Double, stroke: String, width: Double = 1, dash: String? = nil
    ) -> String {
        let dashAttribute = dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
        return "<line x1=\"\(num(x1))\" y1=\"\(num(y1))\" x2=\"\(num(x2))\" y2=\"\(num(y2))\" stroke=\"\(stroke)\" "
            + "stroke-width=\"\(num(width))\"\(dashAttribute)/>"
    }

    static func rect(
        x: Double, y: Double, width: Double, height: Double, fill: String, opacity: Double = 1,
        stroke: String? = nil, title: String? = nil
    ) -> String {
        var attributes = "x=\"\(num(x))\" y=\"\(num(y))\" width=\"\(num(max(0, width)))\" height=\"\(num(max(0, height)))\" "
        attributes += "fill=\"\(fill)\""
        if opacity < 1 { attributes += " fill-opacity=\"\(opacity.isFinite ? String(format: "%.2f", max(0, opacity)) : "1")\"" }
        if let stroke { attributes += " stroke=\"\(stroke)\" stroke-width=\"0.8\"" }
        guard let title else { return "<rect \(attributes)/>" }
        return "<rect \(attributes)><title>\(ReportFormat.html(title))</title></rect>"
    }

    static func circle(x: Double, y: Double, radius: Double, fill: String, stroke: String = "#ffffff", title: String? = nil) -> String {
        let attributes = "cx=\"\(num(x))\" cy=\"\(num(y))\" r=\"\(num(radius))\" fill=\"\(fill)\" stroke=\"\(stroke)\" stroke-width=\"1.5\""
        guard let title else { return "<circle \(attributes)/>" }
        return "<circle \(attributes)><title>\(ReportFormat.html(title))</title></circle>"
    }

    /// A polyline through the points (non-finite points are skipped).
    static func polyline(_ points: [(Double, Double)], stroke: String, width: Double = 2, dash: String? = nil) -> String {
        let valid = points.filter { $0.0.isFinite && $0.1.isFinite }
        guard valid.count > 1 else { return "" }
        let coordinates = valid.map { "\(num($0.0)),\(num($0.1))" }.joined(separator: " ")
        let dashAttribute = dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
        return "<polyline points=\"\(coordinates)\" fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"\(num(width))\" "
            + "stroke-linejoin=\"round\"\(dashAttribute)/>"
    }

    /// Rough width of `text` at `size` px in a sans-serif font.
    static func textWidth(_ text: String, size: Double = 12) -> Double {
        Double(text.count) * size * 0.56
    }

    /// A nice step for `range` split into about `count` parts: 1, 2 or 5 times a power of ten.
    static func niceStep(_ range: Double, count: Int) -> Double {
        guard range.isFinite, range > 0 else { return 1 }
        let raw = range / Double(max(1, count))
        let exponent = floor(log10(raw))
        let fraction = raw / pow(10, exponent)
        let nice: Double
        if fraction <= 1 {
            nice = 1
        } else if fraction <= 2 {
            nice = 2
        } else if fraction <= 5 {
            nice = 5
        } else {
            nice = 10
        }
        return nice * pow(10, exponent)
    }

    /// Round ticks covering `lower...upper` (about `count` intervals); never empty, always at least two ticks.
    static func niceTicks(lower: Double, upper: Double, count: Int = 5) -> (ticks: [Double], step: Double) {
        var lo = lower.isFinite ? lower : 0
        var hi = upper.isFinite ? upper : 1
        if hi < lo { swap(&lo, &hi) }
        if hi == lo {
            if hi == 0 {
                hi = 1
            } else if hi > 0 {
                lo = 0
            } else {
                hi = 0
            }
        }
        let step = niceStep(hi - lo, count: count)
        let start = floor(lo / step + 1e-9) * step
        let end = ceil(hi / step - 1e-9) * step
        var ticks: [Double] = []
        var index = 0
        while index < 100 {
            let value = start + Double(index) * step
            if value > end + step * 0.5 { break }
            ticks.append(abs(value) < step * 1e-9 ? 0 : value)
            index += 1
        }
        if ticks.count < 2 { ticks = [start, start + step] }
        return (ticks, step)
    }

    /// Decade ticks (with 2× and 5× in between when the range is narrow) for a log axis over positive values.
    static func logTicks(lower: Double, upper: Double) -> [Double] {
        let lo = lower.isFinite && lower > 0 ? lower : 1
        let hi = upper.isFinite && upper > lo ? upper : lo * 10
        let first = Int(floor(log10(lo) + 1e-9))
        var last = Int(ceil(log10(hi) - 1e-9))
        if last <= first { last = first + 1 }
        var ticks: [Double] = []
        let dense = last - first <= 2
        for exponent in first...last {
            let base = pow(10, Double(exponent))
            ticks.append(base)
            if dense && exponent < last {
                ticks.append(base * 2)
                ticks.append(base * 5)
            }
        }
        return ticks
    }
}

/// Maps data values to pixels, linear or log10.
struct ReportValueScale {
    var lower: Double
    var upper: Double
    var pixelLower: Double
    var pixelUpper: Double
    var isLog: Bool

    func pixel(_ value: Double) -> Double {
        let v: Double
        let lo: Double
        let hi: Double
        if isLog {
            v = log10(max(value, lower))
            lo = log10(lower)
            hi = log10(upper)
        } else {
            v = value
            lo = lower
            hi = upper
        }
        guard v.isFinite, lo.isFinite, hi.isFinite, hi > lo else { return pixelLower }
        let t = min(max((v - lo) / (hi - lo), 0), 1)
        return pixelLower + t * (pixelUpper - pixelLower)
    }
}

/// One entry of a chart legend.
struct ReportLegendItem {
    enum Kind {
        case swatch
        case line(dashed: Bool)
    }

    var label: String
    var color: String
    var opacity: Double = 1
    var kind: Kind = .swatch
}

/// One bar of a grouped bar chart.
struct ReportBar {
    var value: Double
    var low: Double?
    var high: Double?
    var color: String
    var opacity: Double = 1
    var tooltip: String
    var valueLabel: String?
}

/// One group (x category) of a grouped bar chart.
struct ReportBarGroup {
    var label: String
    var sublabel: String?
    var bars: [ReportBar]
}

/// One series of a categorical line chart: a value (with optional whisker) per category index.
struct ReportLineSeries {
    var name: String
    var color: String
    var dashed: Bool
    var points: [Int: (value: Double, low: Double, high: Double, tooltip: String)]
}

/// One row of a horizontal stacked bar chart.
struct ReportStackRow {
    var label: String
    var sublabel: String?
    var segments: [(name: String, value: Int, color: String)]
}

/// The inline SVG charts of the HTML report.
enum ReportCharts {
    static let width = 720.0
    static let height = 360.0

    // MARK: Shared pieces

    /// Lays out a legend left to right from (x, y), wrapping at `maxWidth`; returns the markup and its height.
    static func legend(_ items: [ReportLegendItem], x: Double, y: Double, maxWidth: Double) -> (svg: [String], height: Double) {
        guard !items.isEmpty else { return ([], 0) }
        var parts: [String] = []
        var cursorX = x
        var cursorY = y
        let rowHeight = 18.0
        for item in items {
            let itemWidth = 22 + ReportSVG.textWidth(item.label) + 16
            if cursorX > x && cursorX + itemWidth > x + maxWidth {
                cursorX = x
                cursorY += rowHeight
            }
            switch item.kind {
            case .swatch:
                parts.append(ReportSVG.rect(
                    x: cursorX, y: cursorY - 10, width: 14, height: 12, fill: item.color, opacity: item.opacity, stroke: "#777777"))
            case .line(let dashed):
                parts.append(ReportSVG.line(
                    x1: cursorX, y1: cursorY - 4, x2: cursorX + 16, y2: cursorY - 4, stroke: item.color, width: 2.5,
                    dash: dashed ? "5 3" : nil))
                parts.append(ReportSVG.circle(x: cursorX + 8, y: cursorY - 4, radius: 3, fill: item.color))
            }
            parts.append(ReportSVG.text(item.label, x: cursorX + 20, y: cursorY))
            cursorX += itemWidth
        }
        return (parts, cursorY - y + rowHeight)
    }

    /// Horizontal grid lines, tick labels and the rotated title of a y axis.
    static func yAxis(
        scale: ReportValueScale, ticks: [Double], step: Double, left: Double, right: Double, title: String
    ) -> [String] {
        var parts: [String] = []
        for tick in ticks {
            let y = scale.pixel(tick)
            parts.append(ReportSVG.line(x1: left, y1: y, x2: right, y2: y, stroke: ReportSVG.gridColor))
            let label = scale.isLog ? logLabel(tick) : ReportFormat.tick(tick, step: step)
            parts.append(ReportSVG.text(label, x: left - 6, y: y + 4, anchor: "end", size: 11, fill: ReportSVG.mutedColor))
        }
        let top = min(scale.pixelLower, scale.pixelUpper)
        let bottom = max(scale.pixelLower, scale.pixelUpper)
        parts.append(ReportSVG.line(x1: left, y1: top, x2: left, y2: bottom, stroke: ReportSVG.axisColor))
        parts.append(ReportSVG.text(title, x: 16, y: (top + bottom) / 2, anchor: "middle", fill: ReportSVG.textColor, rotate: true))
        return parts
    }

    static func logLabel(_ value: Double) -> String {
        guard value.isFinite, value > 0 else { return "" }
        let decimals = value >= 1 ? 0 : Int(ceil(-log10(value) - 1e-9))
        return ReportFormat.grouped(value, decimals: decimals)
    }

    /// A centred "no data" note for an empty chart.
    static func emptyChart(title: String, message: String, width: Double = width, height: Double = 140) -> String {
        ReportSVG.document(width: width, height: height, title: title, body: [
            ReportSVG.rect(x: 1, y: 1, width: width - 2, height: height - 2, fill: "#fafafa", stroke: "#dddddd"),
            ReportSVG.text(message, x: width / 2, y: height / 2 + 4, anchor: "middle", size: 14, fill: ReportSVG.mutedColor),
        ])
    }

    // MARK: Line chart over categories

    /// One line per series over evenly spaced categories, with min–max whiskers at each point.
    static func categoryLines(
        title: String, categories: [String], series: [ReportLineSeries], xTitle: String, yTitle: String
    ) -> String {
        let hasPoints = series.contains { !$0.points.isEmpty }
        guard !categories.isEmpty, hasPoints else { return emptyChart(title: title, message: "No data") }
        let left = 78.0
        let right = width - 20
        let legendItems = series.map { ReportLegendItem(label: $0.name, color: $0.color, kind: .line(dashed: $0.dashed)) }
        let legend = legend(legendItems, x: left, y: 20, maxWidth: right - left)
        let top = 20 + legend.height + 8
        let bottom = height - 52

        let maxValue = series.flatMap { $0.points.values.flatMap { [$0.value, $0.high] } }.filter(\.isFinite).max() ?? 0
        let ticks = ReportSVG.niceTicks(lower: 0, upper: max(maxValue, 0))
        let scale = ReportValueScale(
            lower: ticks.ticks.first ?? 0, upper: ticks.ticks.last ?? 1, pixelLower: bottom, pixelUpper: top, isLog: false)

        var body = legend.svg
        body += yAxis(scale: scale, ticks: ticks.ticks, step: ticks.step, left: left, right: right, title: yTitle)
        body.append(ReportSVG.line(x1: left, y1: bottom, x2: right, y2: bottom, stroke: ReportSVG.axisColor))

        let band = (right - left) / Double(categories.count)
        func centre(_ index: Int) -> Double { left + (Double(index) + 0.5) * band }
        for (index, category) in categories.enumerated() {
            let x = centre(index)
            body.append(ReportSVG.line(x1: x, y1: bottom, x2: x, y2: bottom + 5, stroke: ReportSVG.axisColor))
            body.append(ReportSVG.text(category, x: x, y: bottom + 19, anchor: "middle", fill: ReportSVG.textColor))
        }
        body.append(ReportSVG.text(xTitle, x: (left + right) / 2, y: height - 12, anchor: "middle"))

        // Dodge the series sideways a little so whiskers at the same category do not hide each other.
        let dodge = min(7.0, band * 0.06)
        for (seriesIndex, entry) in series.enumerated() {
            let offset = (Double(seriesIndex) - Double(series.count - 1) / 2) * dodge
            let indices = entry.points.keys.sorted()
            var linePoints: [(Double, Double)] = []
            var marks: [String] = []
            for index in indices {
                guard let point = entry.points[index], point.value.isFinite else { continue }
                let x = centre(index) + offset
                let y = scale.pixel(point.value)
                linePoints.append((x, y))
                if point.low.isFinite, point.high.isFinite, point.high > point.low {
                    let yLow = scale.pixel(point.low)
                    let yHigh = scale.pixel(point.high)
                    marks.append(ReportSVG.line(x1: x, y1: yLow, x2: x, y2: yHigh, stroke: entry.color, width: 1.5))
                    marks.append(ReportSVG.line(x1: x - 4, y1: yLow, x2: x + 4, y2: yLow, stroke: entry.color, width: 1.5))
                    marks.append(ReportSVG.line(x1: x - 4, y1: yHigh, x2: x + 4, y2: yHigh, stroke: entry.color, width: 1.5))
                }
                marks.append(ReportSVG.circle(x: x, y: y, radius: 4, fill: entry.color, title: point.tooltip))
            }
            body.append(ReportSVG.polyline(linePoints, stroke: entry.color, width: 2.5, dash: entry.dashed ? "6 4" : nil))
            body += marks
        }
        return ReportSVG.document(width: width, height: height, title: title, body: body)
    }

    // MARK: Grouped bars

    /// Bars side by side per group, optional min–max whiskers and value labels; linear or log y axis.
    static func groupedBars(
        title: String, groups: [ReportBarGroup], legend legendItems: [ReportLegendItem], xTitle: String?, yTitle: String,
        logScale: Bool
    ) -> String {
        let allBars = groups.flatMap(\.bars)
        guard !groups.isEmpty, !allBars.isEmpty else { return emptyChart(title: title, message: "No data") }
        let left = 78.0
        let right = width - 20
        let legend = legend(legendItems, x: left, y: 20, maxWidth: right - left)
        let hasValueLabels = allBars.contains { $0.valueLabel != nil }
        let top = 20 + legend.height + (hasValueLabels ? 18 : 8)
        let hasSublabels = groups.contains { $0.sublabel != nil }
        let bottom = height - (xTitle == nil ? 34 : 52) - (hasSublabels ? 12 : 0)

        let values = allBars.flatMap { [$0.value, $0.high ?? $0.value, $0.low ?? $0.value] }.filter(\.isFinite)
        var scale: ReportValueScale
        var ticks: [Double]
        var step = 1.0
        let positives = values.filter { $0 > 0 }
        if logScale, let minPositive = positives.min(), let maxPositive = positives.max() {
            ticks = ReportSVG.logTicks(lower: minPositive, upper: maxPositive)
            scale = ReportValueScale(
                lower: ticks.first ?? 1, upper: ticks.last ?? 10, pixelLower: bottom, pixelUpper: top, isLog: true)
        } else {
            let nice = ReportSVG.niceTicks(lower: 0, upper: max(values.max() ?? 0, 0))
            ticks = nice.ticks
            step = nice.step
            scale = ReportValueScale(lower: ticks.first ?? 0, upper: ticks.last ?? 1, pixelLower: bottom, pixelUpper: top, isLog: false)
        }

        var body = legend.svg
        body += yAxis(scale: scale, ticks: ticks, step: step, left: left, right: right, title: yTitle)

        let band = (right - left) / Double(groups.count)
        let maxBars = max(1, groups.map(\.bars.count).max() ?? 1)
        let barWidth = min(56, band * 0.8 / Double(maxBars))
        for (groupIndex, group) in groups.enumerated() {
            let centre = left + (Double(groupIndex) + 0.5) * band
            let start = centre - barWidth * Double(group.bars.count) / 2
            for (barIndex, bar) in group.bars.enumerated() {
                let x = start + Double(barIndex) * barWidth
                let inner = max(1, barWidth - 2)
                if bar.value.isFinite && (!scale.isLog || bar.value > 0) {
                    let y = scale.pixel(bar.value)
                    body.append(ReportSVG.rect(
                        x: x + 1, y: y, width: inner, height: bottom - y, fill: bar.color, opacity: bar.opacity, title: bar.tooltip))
                }
                var labelY = bar.value.isFinite ? scale.pixel(bar.value) : bottom
                if let low = bar.low, let high = bar.high, low.isFinite, high.isFinite, high > low {
                    let xMid = x + 1 + inner / 2
                    let yLow = scale.pixel(low)
                    let yHigh = scale.pixel(high)
                    let cap = min(6, inner / 3)
                    body.append(ReportSVG.line(x1: xMid, y1: yLow, x2: xMid, y2: yHigh, stroke: "#222222", width: 1.3))
                    body.append(ReportSVG.line(x1: xMid - cap, y1: yLow, x2: xMid + cap, y2: yLow, stroke: "#222222", width: 1.3))
                    body.append(ReportSVG.line(x1: xMid - cap, y1: yHigh, x2: xMid + cap, y2: yHigh, stroke: "#222222", width: 1.3))
                    labelY = min(labelY, yHigh)
                }
                if let label = bar.valueLabel {
                    body.append(ReportSVG.text(label, x: x + 1 + inner / 2, y: labelY - 5, anchor: "middle", size: 11))
                }
            }
            body.append(ReportSVG.text(group.label, x: centre, y: bottom + 18, anchor: "middle", fill: ReportSVG.textColor))
            if let sublabel = group.sublabel {
                body.append(ReportSVG.text(sublabel, x: centre, y: bottom + 31, anchor: "middle", size: 10.5, fill: ReportSVG.mutedColor))
            }
        }
        body.append(ReportSVG.line(x1: left, y1: bottom, x2: right, y2: bottom, stroke: ReportSVG.axisColor))
        if let xTitle {
            body.append(ReportSVG.text(xTitle, x: (left + right) / 2, y: height - 12, anchor: "middle"))
        }
        return ReportSVG.document(width: width, height: height, title: title, body: body)
    }

    // MARK: Stacked horizontal bars

    /// One horizontal bar per row, split into segments by share of the row's total (0–100 %).
    static func stackedShares(title: String, rows: [ReportStackRow], legend legendItems: [ReportLegendItem]) -> String {
        guard !rows.isEmpty else { return emptyChart(title: title, message: "No data") }
        let labelWidth = rows.map { max(ReportSVG.textWidth($0.label, size: 12), ReportSVG.textWidth($0.sublabel ?? "", size: 10.5)) }
            .max() ?? 40
        let left = min(200, max(70, labelWidth + 18))
        let right = width - 120
        let legend = legend(legendItems, x: left, y: 20, maxWidth: width - 20 - left)
        let top = 20 + legend.height + 10
        let rowHeight = 34.0
        let barHeight = 22.0
        let bottom = top + rowHeight * Double(rows.count)
        let chartHeight = bottom + 46
        let scale = ReportValueScale(lower: 0, upper: 100, pixelLower: left, pixelUpper: right, isLog: false)

        var body = legend.svg
        for tick in stride(from: 0.0, through: 100.0, by: 20.0) {
            let x = scale.pixel(tick)
            body.append(ReportSVG.line(x1: x, y1: top, x2: x, y2: bottom, stroke: ReportSVG.gridColor))
            body.append(ReportSVG.text("\(Int(tick))%", x: x, y: bottom + 16, anchor: "middle", size: 11, fill: ReportSVG.mutedColor))
        }
        body.append(ReportSVG.text("share of the mode's transactions", x: (left + right) / 2, y: chartHeight - 10,
                                   anchor: "middle"))
        let plotWidth = right - left
        for (rowIndex, row) in rows.enumerated() {
            let y = top + Double(rowIndex) * rowHeight + (rowHeight - barHeight) / 2
            let total = row.segments.reduce(0) { $0 + max(0, $1.value) }
            let labelY = row.sublabel == nil ? y + barHeight / 2 + 4 : y + barHeight / 2 - 1
            body.append(ReportSVG.text(row.label, x: left - 8, y: labelY, anchor: "end"))
            if let sublabel = row.sublabel {
                body.append(ReportSVG.text(sublabel, x: left - 8, y: labelY + 12, anchor: "end", size: 10.5, fill: ReportSVG.mutedColor))
            }
            guard total > 0 else {
                body.append(ReportSVG.rect(x: left, y: y, width: plotWidth, height: barHeight, fill: "#f4f4f4", stroke: "#cccccc"))
                body.append(ReportSVG.text("no transactions", x: left + 8, y: y + barHeight / 2 + 4, size: 11, fill: ReportSVG.mutedColor))
                continue
            }
            // Every non-zero segment gets at least 2 px; the largest segment gives the room back.
            var widths = row.segments.map { $0.value > 0 ? max(2, Double($0.value) / Double(total) * plotWidth) : 0 }
            let excess = widths.reduce(0, +) - plotWidth
            if excess > 0, let largest = widths.indices.max(by: { widths[$0] < widths[$1] }) {
                widths[largest] = max(2, widths[largest] - excess)
            }
            var x = left
            for (segment, segmentWidth) in zip(row.segments, widths) where segmentWidth > 0 {
                let tooltip = "\(row.label) \(row.sublabel ?? "") · \(segment.name): \(ReportFormat.count(segment.value)) "
                    + "(\(ReportFormat.percent(Double(segment.value), of: Double(total))))"
                body.append(ReportSVG.rect(x: x, y: y, width: segmentWidth, height: barHeight, fill: segment.color, title: tooltip))
                x += segmentWidth
            }
            body.append(ReportSVG.rect(x: left, y: y, width: plotWidth, height: barHeight, fill: "none", stroke: "#888888"))
            let completed = row.segments.first { $0.name == "completed" }?.value ?? 0
            let summary = "\(ReportFormat.percent(Double(completed), of: Double(total))) ok"
            body.append(ReportSVG.text(summary, x: right + 8, y: y + barHeight / 2 - 1, size: 11.5))
            body.append(ReportSVG.text("n = \(ReportFormat.count(total))", x: right + 8, y: y + barHeight / 2 + 11, size: 10.5,
                                       fill: ReportSVG.mutedColor))
        }
        body.append(ReportSVG.line(x1: left, y1: bottom, x2: right, y2: bottom, stroke: ReportSVG.axisColor))
        return ReportSVG.document(width: width, height: chartHeight, title: title, body: body)
    }

    // MARK: Recovery timeline

    /// Throughput samples over time as a step line, the fault as a dashed red line and the resolution as a green line.
    static func recoveryTimeline(_ timeline: RecoveryTimeline, color: String) -> String {
        let chartWidth = 560.0
        let chartHeight = 250.0
        let title = "\(timeline.mode), \(ReportRenderer.recoveryPlace(timeline)): \(timeline.fault)"
        let left = 60.0
        let right = chartWidth - 18
        let top = 44.0
        let bottom = chartHeight - 44
        let sample = timeline.sampleSeconds.isFinite && timeline.sampleSeconds > 0 ? timeline.sampleSeconds : 1
        let samples = timeline.throughputSamples.map { $0.isFinite ? max(0, $0) : 0 }
        let faultAt = timeline.faultAtSeconds.isFinite ? max(0, timeline.faultAtSeconds) : nil
        let resolvedAt = timeline.resolvedAtSeconds.flatMap { $0.isFinite ? max(0, $0) : nil }
        let span = max(Double(samples.count) * sample, faultAt ?? 0, resolvedAt ?? 0)
        let xTicks = ReportSVG.niceTicks(lower: 0, upper: span, count: 6)
        let xScale = ReportValueScale(
            lower: 0, upper: xTicks.ticks.last ?? 1, pixelLower: left, pixelUpper: right, isLog: false)
        let yTicks = ReportSVG.niceTicks(lower: 0, upper: samples.max() ?? 0, count: 4)
        let yScale = ReportValueScale(
            lower: 0, upper: yTicks.ticks.last ?? 1, pixelLower: bottom, pixelUpper: top, isLog: false)

        var body = yAxis(scale: yScale, ticks: yTicks.ticks, step: yTicks.step, left: left, right: right, title: "tx/s")
        body.append(ReportSVG.line(x1: left, y1: bottom, x2: right, y2: bottom, stroke: ReportSVG.axisColor))
        for tick in xTicks.ticks {
            let x = xScale.pixel(tick)
            body.append(ReportSVG.line(x1: x, y1: bottom, x2: x, y2: bottom + 4, stroke: ReportSVG.axisColor))
            body.append(ReportSVG.text(ReportFormat.tick(tick, step: xTicks.step), x: x, y: bottom + 16, anchor: "middle", size: 11,
                                       fill: ReportSVG.mutedColor))
        }
        body.append(ReportSVG.text("seconds since the run started", x: (left + right) / 2, y: chartHeight - 8, anchor: "middle"))

        if samples.isEmpty {
            body.append(ReportSVG.text("no samples", x: (left + right) / 2, y: (top + bottom) / 2, anchor: "middle", size: 13,
                                       fill: ReportSVG.mutedColor))
        } else {
            var path = "M\(ReportSVG.num(xScale.pixel(0))),\(ReportSVG.num(yScale.pixel(samples[0])))"
            for (index, value) in samples.enumerated() {
                if index > 0 { path += " V\(ReportSVG.num(yScale.pixel(value)))" }
                path += " H\(ReportSVG.num(xScale.pixel(Double(index + 1) * sample)))"
            }
            let area = path + " V\(ReportSVG.num(bottom)) H\(ReportSVG.num(left)) Z"
            body.append("<path d=\"\(area)\" fill=\"\(color)\" fill-opacity=\"0.15\" stroke=\"none\"/>")
            body.append("<path d=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" stroke-linejoin=\"round\"/>")
            for (index, value) in samples.enumerated() {
                let x0 = xScale.pixel(Double(index) * sample)
                let x1 = xScale.pixel(Double(index + 1) * sample)
                let start = ReportFormat.grouped(Double(index) * sample, decimals: sample < 1 ? 1 : 0)
                let end = ReportFormat.grouped(Double(index + 1) * sample, decimals: sample < 1 ? 1 : 0)
                body.append(ReportSVG.rect(x: x0, y: top, width: x1 - x0, height: bottom - top, fill: "#ffffff", opacity: 0,
                                           title: "\(start)–\(end) s: \(ReportFormat.throughput(value)) tx/s"))
            }
        }

        // Labels sit above the plot, the fault's on the first row and the resolution's on the second.
        func label(_ text: String, at x: Double, row y: Double, color: String, weight: String? = nil) -> String {
            let roomRight = chartWidth - 6 - (x + 4)
            let roomLeft = x - 4 - 6
            let anchorEnd = roomRight < ReportSVG.textWidth(text, size: 11) && roomLeft > roomRight
            let room = anchorEnd ? roomLeft : roomRight
            let fitted = ReportFormat.truncated(text, to: max(4, Int(room / (11 * 0.56))))
            return ReportSVG.text(fitted, x: anchorEnd ? x - 4 : x + 4, y: y, anchor: anchorEnd ? "end" : "start", size: 11,
                                  fill: color, weight: weight, title: text)
        }
        let faultColor = "#D55E00"
        let resolvedColor = "#1A7F37"
        if let faultAt {
            let x = xScale.pixel(faultAt)
            body.append(ReportSVG.line(x1: x, y1: 8, x2: x, y2: bottom, stroke: faultColor, width: 2, dash: "6 4"))
            body.append(label("\(timeline.fault) at \(ReportFormat.seconds(faultAt))", at: x, row: 17, color: faultColor))
        }
        if let resolvedAt {
            let x = xScale.pixel(resolvedAt)
            let recovery = timeline.recoverySeconds ?? faultAt.map { resolvedAt - $0 }
            let text = recovery.map { "resolved after \(ReportFormat.seconds($0))" } ?? "resolved"
            body.append(ReportSVG.line(x1: x, y1: 25, x2: x, y2: bottom, stroke: resolvedColor, width: 2))
            body.append(label(text, at: x, row: 34, color: resolvedColor, weight: "600"))
        } else {
            body.append(ReportSVG.text("not resolved", x: right, y: 34, anchor: "end", size: 12, fill: "#C00000", weight: "700"))
        }
        return ReportSVG.document(width: chartWidth, height: chartHeight, title: title, body: body)
    }
}
