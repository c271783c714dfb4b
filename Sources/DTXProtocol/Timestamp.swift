import Foundation

/// RFC 3339 times as the wire protocol writes them: UTC with milliseconds, `2026-01-31T12:00:00.000Z`.
public enum Timestamp {
    /// `date` in the wire form.
    public static func string(_ date: Date) -> String {
        style.format(date)
    }

    private static let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    /// Whether `text` is an RFC 3339 date-time (with a zone: `Z` or `±hh:mm`), checked by shape, without a formatter.
    public static func isRFC3339(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count >= 20, bytes.count <= 40 else { return false }
        func digits(_ range: Range<Int>) -> Bool { range.allSatisfy { bytes[$0] >= 48 && bytes[$0] <= 57 } }
        guard digits(0..<4), bytes[4] == 45, digits(5..<7), bytes[7] == 45, digits(8..<10), bytes[10] == 84 || bytes[10] == 116,
            digits(11..<13), bytes[13] == 58, digits(14..<16), bytes[16] == 58, digits(17..<19)
        else { return false }
        var index = 19
        if bytes[index] == 46 {
            index += 1
            let start = index
            while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 { index += 1 }
            guard index > start else { return false }
        }
        guard index < bytes.count else { return false }
        if bytes[index] == 90 || bytes[index] == 122 { return index == bytes.count - 1 }
        guard bytes[index] == 43 || bytes[index] == 45, bytes.count - index == 6 else { return false }
        return digits(index + 1..<index + 3) && bytes[index + 3] == 58 && digits(index + 4..<index + 6)
    }
}
