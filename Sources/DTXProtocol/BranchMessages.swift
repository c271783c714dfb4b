/// The body of every participant branch call: the documented query parameters, as JSON.
public struct BranchRequest: Codable, Sendable, Hashable {
    public var workerEventId: Int64
    public var productId: Int64
    public var quantity: Int64

    public init(workerEventId: Int64, productId: Int64, quantity: Int64) {
        self.workerEventId = workerEventId
        self.productId = productId
        self.quantity = quantity
    }

    /// Throws `ProtocolError.badRequest` naming the field that is out of range.
    public func validate() throws(ProtocolError) {
        guard workerEventId >= 1 else { throw .badRequest("worker_event_id must be a positive integer") }
        guard productId >= 1 else { throw .badRequest("product_id must be a positive integer") }
        try Limits.validateQuantity(quantity)
    }
}

/// What a participant answers to a successful branch call.
public struct BranchResponse: Codable, Sendable, Hashable {
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

    public static func validateQuantity(_ quantity: Int64) throws(ProtocolError) {
        guard quantityRange.contains(quantity) else {
            throw .badRequest("quantity must be an integer from 1 to 1000000, got \(quantity)")
        }
    }
}
