import Foundation

/// An error with a stable code, as sent in the JSON error body `{"error": {"code": ..., "message": ...}}`.
public struct ProtocolError: Error, Codable, Sendable, Hashable, CustomStringConvertible {
    /// Stable error codes. The HTTP status goes with the code (see `httpStatus`).
    public struct Code: RawRepresentable, Codable, Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public init(stringLiteral value: String) { self.rawValue = value }
        public var description: String { rawValue }

        // 400
        public static let badRequest: Code = "bad_request"
        // 401
        public static let unauthorized: Code = "unauthorized"
        // 404, 405
        public static let notFound: Code = "not_found"
        /// The coordinator has no record of a transaction id it could have handed out: it never began (its first
        /// record was lost in a crash of the coordinator's database, or never written). Presumed aborted.
        public static let unknownTransaction: Code = "unknown_transaction"
        public static let methodNotAllowed: Code = "method_not_allowed"
        // 409: final business refusals, and states a call cannot move from
        public static let insufficientStock: Code = "insufficient_stock"
        public static let unknownProduct: Code = "unknown_product"
        public static let branchCancelled: Code = "branch_cancelled"
        public static let branchConfirmed: Code = "branch_confirmed"
        public static let branchNotTried: Code = "branch_not_tried"
        public static let branchConflict: Code = "branch_conflict"
        public static let invalidState: Code = "invalid_state"
        public static let transactionFailed: Code = "transaction_failed"
        /// A branch names a participant the coordinator was not started with.
        public static let unknownParticipant: Code = "unknown_participant"
        /// Two branches name the same participant and product (a branch is that pair at a participant).
        public static let duplicateBranch: Code = "duplicate_branch"
        /// XA at a participant whose PostgreSQL server has max_prepared_transactions = 0: nothing prepared.
        public static let xaUnavailable: Code = "xa_unavailable"
        /// A first-phase call that arrived after the first phase's end (`not_after`).
        public static let deadlinePassed: Code = "deadline_passed"
        /// A first-phase call for a branch older than what the participant keeps (retention).
        public static let branchPruned: Code = "branch_pruned"
        // 422
        public static let idempotencyKeyReused: Code = "idempotency_key_reused"
        // 413
        public static let bodyTooLarge: Code = "body_too_large"
        // 415: a body that says it is not JSON (a form or text: what a page of another site can send without asking)
        public static let unsupportedMediaType: Code = "unsupported_media_type"
        // 5xx: retried by the coordinator
        public static let lockTimeout: Code = "lock_timeout"
        public static let databaseUnavailable: Code = "database_unavailable"
        public static let injectedFault: Code = "injected_fault"
        public static let internalError: Code = "internal_error"
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public static func badRequest(_ message: String) -> ProtocolError { .init(.badRequest, message) }

    public var description: String { "\(code): \(message)" }

    /// The HTTP status code that goes with `code`.
    public var httpStatus: Int {
        switch code {
        case .badRequest: 400
        case .unauthorized: 401
        case .notFound, .unknownTransaction: 404
        case .methodNotAllowed: 405
        case .bodyTooLarge: 413
        case .unsupportedMediaType: 415
        case .idempotencyKeyReused: 422
        case .insufficientStock, .unknownProduct, .branchCancelled, .branchConfirmed, .branchNotTried, .branchConflict,
            .invalidState, .transactionFailed, .xaUnavailable, .deadlinePassed, .branchPruned, .unknownParticipant, .duplicateBranch:
            409
        case .internalError: 500
        default: 503
        }
    }
}

/// The JSON error body every dtx service sends.
public struct ErrorBody: Codable, Sendable {
    public var error: ProtocolError
    public init(error: ProtocolError) { self.error = error }
}

/// The JSON coders of the wire protocol. Keys are snake_case by each type's own `CodingKeys` (no key conversion: it
/// costs a string transformation per key per message), and one encoder and one decoder serve every message (they are
/// safe to share between threads).
public enum WireJSON {
    private static let sharedEncoder = JSONEncoder()
    private static let sharedDecoder = JSONDecoder()

    public static func encoder() -> JSONEncoder { sharedEncoder }
    public static func decoder() -> JSONDecoder { sharedDecoder }

    /// JSON's insignificant whitespace.
    public static func isWhitespace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }

    /// Decodes `data`, turning a decoding failure into a `badRequest` that names the field. An object that names a key
    /// twice is refused: JSONDecoder keeps the first value, most other readers (a proxy, a validator in front) the last,
    /// so `{"quantity": 1000000, "quantity": 1}` would be one request to them and another to dtx.
    /// Only UTF-8 (RFC 8259 for JSON between systems): JSONDecoder also reads UTF-16 and UTF-32, which the byte scan for
    /// repeated keys cannot follow, so `{"quantity": 1000000, "quantity": 1}` in UTF-16 got past it. Valid UTF-8 JSON has
    /// no NUL byte and no UTF-16 byte-order mark.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws(ProtocolError) -> T {
        if data.contains(0) || data.starts(with: [0xFE, 0xFF]) || data.starts(with: [0xFF, 0xFE]) {
            throw .badRequest("the body must be JSON in UTF-8")
        }
        if let key = DuplicateKeys.first(in: data) { throw .badRequest("field '\(key)' is given twice in one object") }
        do {
            return try decoder().decode(type, from: data)
        } catch let error as DecodingError {
            // JSONDecoder says "not valid JSON", with no field, for a number that is valid JSON but no Int64 (2^63, 1.5)
            if case .dataCorrupted(let context) = error, context.codingPath.isEmpty, let field = nonIntegerNumber(in: data) {
                throw .badRequest("field '\(field)' must be a whole number from -9223372036854775808 to 9223372036854775807")
            }
            throw .badRequest(describe(error))
        } catch {
            throw .badRequest("the body is not valid JSON")
        }
    }

    /// The first field (by path) holding a number that is valid JSON but no Int64: a fraction, an exponent, or out of
    /// range. Only on the error path: the body is parsed again for the message.
    static func nonIntegerNumber(in data: Data) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return nil }
        func walk(_ value: Any, _ path: String) -> String? {
            if let object = value as? [String: Any] {
                for (key, item) in object.sorted(by: { $0.key < $1.key }) {
                    if let found = walk(item, path.isEmpty ? key : "\(path).\(key)") { return found }
                }
            } else if let array = value as? [Any] {
                for (index, item) in array.enumerated() {
                    if let found = walk(item, "\(path)[\(index)]") { return found }
                }
            } else if let number = value as? NSNumber, !(value is Bool) {
                let type = String(cString: number.objCType)
                if type == "d" || type == "f" || (type == "Q" && number.uint64Value > UInt64(Int64.max)) { return path.isEmpty ? "(body)" : path }
            }
            return nil
        }
        return walk(object, "")
    }

    static func describe(_ error: DecodingError) -> String {
        func field(_ path: [any CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "field '\(field(context.codingPath + [key]))' is missing"
        case .typeMismatch(let type, let context):
            return "field '\(field(context.codingPath))' must be \(kind(type))"
        case .valueNotFound(let type, let context):
            return "field '\(field(context.codingPath))' must be \(kind(type)), not null"
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return "the body is not valid JSON" }
            return "field '\(field(context.codingPath))' has a value that is not allowed"
        @unknown default:
            return "the body could not be read"
        }
    }

    private static func kind(_ type: Any.Type) -> String {
        switch type {
        case is Int64.Type, is Int.Type: "an integer"
        case is String.Type: "a string"
        case is Array<Any>.Type: "an array"
        default: "of type \(type)"
        }
    }
}

/// Finds a key given twice in one JSON object, by a scan of the bytes (strings, escapes and nesting followed; nothing
/// else checked: the decoder does that after).
enum DuplicateKeys {
    static func first(in data: Data) -> String? {
        data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> String? in
            // one entry per open container: the keys seen so far for an object, nil for an array
            var stack: [Set<[UInt8]>?] = []
            var index = 0
            let count = bytes.count
            // true when the next string in the innermost object is a key
            var expectKey = false
            while index < count {
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "{"):
                    stack.append([])
                    expectKey = true
                case UInt8(ascii: "["):
                    stack.append(nil)
                    expectKey = false
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if !stack.isEmpty { stack.removeLast() }
                    expectKey = false
                case UInt8(ascii: ","):
                    expectKey = stack.last.map { $0 != nil } ?? false
                case UInt8(ascii: ":"):
                    expectKey = false
                case UInt8(ascii: "\""):
                    let start = index + 1
                    var end = start
                    var escaped = false
                    while end < count, bytes[end] != UInt8(ascii: "\"") {
                        if bytes[end] == UInt8(ascii: "\\") { escaped = true; end += 1 }
                        end += 1
                    }
                    if expectKey, let keys = stack.last, keys != nil {
                        var key = Array(bytes[start..<min(end, count)])
                        // an escaped key is compared as what it means ("quantit\u0079" is "quantity")
                        if escaped, let text = try? JSONDecoder().decode(String.self, from: Data([UInt8(ascii: "\"")] + key + [UInt8(ascii: "\"")])) {
                            key = Array(text.utf8)
                        }
                        if keys!.contains(key) { return String(decoding: key, as: UTF8.self) }
                        stack[stack.count - 1]!.insert(key)
                        expectKey = false
                    }
                    index = end
                default:
                    break
                }
                index += 1
            }
            return nil
        }
    }
}
