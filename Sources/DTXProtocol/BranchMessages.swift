/// The body of every participant branch call: the documented query parameters, as JSON.
///
/// `not_after` (optional, RFC 3339) is the end of the global transaction's first phase, set by the coordinator: a
/// first-phase call (try, reserve, prepare) that arrives after it is refused with 409 `deadline_passed` and changes
/// nothing. A client may send the documented body alone.
public struct BranchRequest: Codable, Sendable, Hashable {
    enum CodingKeys: String, CodingKey {
        case workerEventId = "worker_event_id", productId = "product_id", quantity, notAfter = "not_after"
    }

    public var workerEventId: Int64
    public var productId: Int64
    public var quantity: Int64
    public var notAfter: String?

    public init(workerEventId: Int64, productId: Int64, quantity: Int64, notAfter: String? = nil) {
        self.workerEventId = workerEventId
        self.productId = productId
        self.quantity = quantity
        self.notAfter = notAfter
    }

    /// `not_after` may be left out, not null (the contract has no nulls in requests).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        workerEventId = try container.decode(Int64.self, forKey: .workerEventId)
        productId = try container.decode(Int64.self, forKey: .productId)
        quantity = try container.decode(Int64.self, forKey: .quantity)
        notAfter = container.contains(.notAfter) ? try container.decode(String.self, forKey: .notAfter) : nil
    }

    /// Throws `ProtocolError.badRequest` naming the field that is out of range.
    public func validate() throws(ProtocolError) {
        guard workerEventId >= 1 else { throw .badRequest("worker_event_id must be a positive integer") }
        guard productId >= 1 else { throw .badRequest("product_id must be a positive integer") }
        try Limits.validateQuantity(quantity)
        if let notAfter, Timestamp.parse(notAfter) == nil {
            throw .badRequest("not_after must be an RFC 3339 time such as 2026-01-31T12:00:00.000Z")
        }
    }
}

/// The header a coordinator sends with every branch call: its base URL, which the participant stores with the branch
/// so that its reconciler always knows whom to ask about a branch left open.
public enum CoordinatorHeader {
    public static let name = "dtx-coordinator"

    /// An http(s) base URL of at most 200 characters with no spaces, else nil (the header is then ignored).
    public static func validated(_ value: String?) -> String? {
        guard let value, value.count <= 200, value.hasPrefix("http://") || value.hasPrefix("https://"),
            !value.contains(where: { $0.isWhitespace || $0 == "?" || $0 == "#" })
        else { return nil }
        return value.hasSuffix("/") ? String(value.dropLast()) : value
    }
}

/// One item's answer in a batched second-phase call (`POST /tcc/confirm` with an array body): what the same request
/// alone would have answered, as its HTTP status and its body.
public struct BranchBatchItem: Codable, Sendable, Hashable {
    enum CodingKeys: String, CodingKey {
        case workerEventId = "worker_event_id", productId = "product_id", httpStatus = "http_status", result, error
    }

    public var workerEventId: Int64
    public var productId: Int64
    /// 200 done; 400 or 409 refused; 5xx retry.
    public var httpStatus: Int
    public var result: BranchResponse?
    public var error: ProtocolError?

    public init(workerEventId: Int64, productId: Int64, httpStatus: Int, result: BranchResponse?, error: ProtocolError?) {
        self.workerEventId = workerEventId
        self.productId = productId
        self.httpStatus = httpStatus
        self.result = result
        self.error = error
    }
}

/// What a participant answers to a successful branch call.
public struct BranchResponse: Codable, Sendable, Hashable {
    enum CodingKeys: String, CodingKey {
        case workerEventId = "worker_event_id", productId = "product_id", operation, effect, status
    }

    /// What the call did.
    public enum Effect: String, Codable, Sendable {
        /// The operation ran: stock and row changed as the operation says.
        case applied
        /// The operation had run before (barrier row present): nothing changed.
        case duplicate
        /// An undo whose origin never ran: recorded so a late origin does nothing, no stock touched.
        case nullCompensation = "null_compensation"
    }

    public var workerEventId: Int64
    public var productId: Int64
    public var operation: BranchOperation
    public var effect: Effect
    /// The branch's `transactions.status` after the call, or nil when there is no row.
    public var status: RowStatus?

    public init(workerEventId: Int64, productId: Int64, operation: BranchOperation, effect: Effect, status: RowStatus?) {
        self.workerEventId = workerEventId
        self.productId = productId
        self.operation = operation
        self.effect = effect
        self.status = status
    }
}

/// `GET /tcc/status`: the branch row as the participant sees it.
public struct BranchStatus: Codable, Sendable, Hashable {
    enum CodingKeys: String, CodingKey {
        case workerEventId = "worker_event_id", productId = "product_id", status, quantity
    }

    public var workerEventId: Int64
    public var productId: Int64
    public var status: RowStatus?
    public var quantity: Int64?

    public init(workerEventId: Int64, productId: Int64, status: RowStatus?, quantity: Int64?) {
        self.workerEventId = workerEventId
        self.productId = productId
        self.status = status
        self.quantity = quantity
    }
}

/// `GET /products/{id}`.
public struct Product: Codable, Sendable, Hashable {
    public var id: Int64
    public var name: String
    public var stock: Int64

    public init(id: Int64, name: String, stock: Int64) {
        self.id = id
        self.name = name
        self.stock = stock
    }
}

public enum Limits {
    public static let quantityRange: ClosedRange<Int64> = 1...1_000_000
    /// Request bodies above this size get 413.
    public static let maxBodyBytes = 64 * 1024
    /// Items in one batched second-phase call.
    public static let maxBatchItems = 256

    public static func validateQuantity(_ quantity: Int64) throws(ProtocolError) {
        guard quantityRange.contains(quantity) else {
            throw .badRequest("quantity must be an integer from 1 to 1000000, got \(quantity)")
        }
    }
}
