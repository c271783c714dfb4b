@testable import DTXCoordinator
import DTXHTTP
import DTXPostgres
import AsyncHTTPClient
import DTXBench
import DTXProtocol
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The published contract: every route served is in the OpenAPI documents and every path of them is served; the
/// documents are served at /openapi.json; a wrong method gets 405 with Allow. And the status page, loaded by headless
/// Chromium from a live coordinator, its rendered DOM checked.
@Suite("Contract and status page")
struct ContractTests {
    /// "METHOD /path" for every operation of an OpenAPI document.
    static func operations(_ document: Data) throws -> Set<String> {
        let object = try JSONSerialization.jsonObject(with: document) as? [String: Any]
        let paths = object?["paths"] as? [String: [String: Any]] ?? [:]
        return Set(paths.flatMap { path, operations in operations.keys.map { "\($0.uppercased()) \(path)" } })
    }

    static func repositoryFile(_ path: String) throws -> Data {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try Data(contentsOf: root.appendingPathComponent(path))
    }

    @Test("the routers serve exactly the operations of openapi/*.json, and serve those documents")
    func routesMatchDocuments() async throws {
        try await CoordinatorFixture.with { f in
            for (routes, file, url) in [
                (f.serviceA.participant.routes, "openapi/participant.json", f.serviceA.service.url),
                (try #require(await f.built.coordinator?.routes), "openapi/coordinator.json", f.coordinatorURL),
            ] {
                let committed = try Self.repositoryFile(file)
                let served = try await f.client.get(url + "/openapi.json", timeout: .seconds(5))
                #expect(served.status == 200)
                #expect(served.body == committed, "\(file) is what the service serves")
                let documented = try Self.operations(committed)
                let routed = Set(routes.described)
                #expect(routed.subtracting(documented).isEmpty, "served but not in \(file): \(routed.subtracting(documented))")
                #expect(documented.subtracting(routed).isEmpty, "in \(file) but not served: \(documented.subtracting(routed))")
            }
            // a wrong method on a served path, also one with a parameter: 405 and the methods it takes
            for (method, path, allow) in [("DELETE", "/v1/transactions/5", "GET"), ("PUT", "/v1/transactions", "GET, POST"), ("POST", "/openapi.json", "GET")] {
                let response = try await f.client.httpClient.execute(
                    { var request = HTTPClientRequest(url: f.coordinatorURL + path); request.method = .RAW(value: method); return request }(), timeout: .seconds(5)
                )
                #expect(response.status.code == 405, "\(method) \(path)")
                #expect(response.headers.first(name: "allow") == allow, "\(method) \(path)")
            }
        }
    }

    /// Headless Chromium, or nil when it is not installed (.ci/run installs it).
    static var chromium: String? { ["chromium", "chromium-browser", "google-chrome"].lazy.compactMap(Command.which).first }

    /// The DOM Chromium renders for `url` (after its scripts, if any), as HTML text.
    static func renderedDOM(_ url: String) async throws -> String {
        let chromium = try #require(Self.chromium, "headless Chromium is needed: apt-get install chromium")
        let out = "/tmp/dtx-test-\(getpid())-dom-\(UUID().uuidString).html"
        let process = try ChildProcess.spawn(
            name: "chromium", executable: chromium,
            arguments: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--dump-dom", url],
            logPath: out
        )
        guard await process.wait(timeout: .seconds(90)) == 0 else {
            await process.stop()
            Issue.record("chromium did not render \(url): \(process.logTail())")
            return ""
        }
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    @Test("the status page in headless Chromium: transactions of all three modes, filters, paging, a page per transaction, the token")
    func statusPageInChromium() async throws {
        try await CoordinatorFixture.with(configure: { $0.token = "page-secret" }) { f in
            let client = ServiceClient(configuration: .init(token: "page-secret"))
            defer { Task { try? await client.shutdown() } }
            var ids: [Mode: Int64] = [:]
            for mode in Mode.allCases {
                ids[mode] = try await client.post(f.coordinatorURL + "/v1/transactions", json: TransactionRequest(mode: mode, productId: 1, quantity: 1), timeout: .seconds(30))
                    .decode(TransactionView.self).id
                #expect(try await client.post(f.coordinatorURL + "/v1/transactions", json: TransactionRequest(mode: mode, productId: 1, quantity: 1000), timeout: .seconds(30)).status == 409)
            }
            // the page needs the token like every route; given once in the address, it becomes a cookie
            #expect(try await f.client.get(f.coordinatorURL + "/", timeout: .seconds(5)).status == 401)
            let page = try await Self.renderedDOM(f.coordinatorURL + "/?token=page-secret")
            for mode in Mode.allCases {
                #expect(page.contains("data-id=\"\(ids[mode]!)\" data-mode=\"\(mode.rawValue)\" data-status=\"completed\""), "\(mode)")
            }
            #expect(page.contains("data-status=\"compensated\""))
            #expect(page.contains("data-status=\"failed\""))
            #expect(page.contains("insufficient_stock"))
            #expect(page.contains("id=\"open-count\">0<"))
            #expect(page.contains("http-equiv=\"refresh\""))
            #expect(!page.contains("src=\"http") && !page.contains("href=\"http"), "no external assets")
            // a filter, paging with a page of one, and a transaction's own page
            let filtered = try await Self.renderedDOM(f.coordinatorURL + "/?mode=saga&status=compensated&token=page-secret")
            #expect(filtered.contains("data-mode=\"saga\" data-status=\"compensated\"") || filtered.contains("class=\"on\" data-filter=\"mode-saga\""))
            let detail = try await Self.renderedDOM(f.coordinatorURL + "/ui/transactions/\(ids[.xa]!)?token=page-secret")
            #expect(detail.contains("Transaction \(ids[.xa]!)"))
            #expect(detail.contains("data-participant=\"ServiceA\" data-state=\"committed\""))
            #expect(detail.contains("data-participant=\"ServiceB\" data-state=\"committed\""))
            // the token in the address: one redirect to the same page, its filters kept, the token in a cookie (before,
            // the redirect dropped the filters)
            let signIn = try await f.client.raw("GET", f.coordinatorURL + "/?mode=saga&token=page-secret&status=compensated")
            #expect(signIn.status == 303)
            #expect(signIn.header("location") == "/?mode=saga&status=compensated")
            #expect(signIn.header("set-cookie")?.hasPrefix("dtx_token=page-secret;") == true)
            // and never to another site ("//host/..." is a URL of another host to a browser)
            let elsewhere = try await f.client.raw("GET", f.coordinatorURL + "//ui/evil.example/x?token=page-secret")
            #expect(elsewhere.header("location") == "/ui/evil.example/x", "\(elsewhere.status) \(elsewhere.header("location") ?? "")")
            // and only for the pages, as documented: the API takes the header (before, any GET signed in)
            for path in ["/v1/transactions?token=page-secret", "//evil.example/x?token=page-secret"] {
                let api = try await f.client.raw("GET", f.coordinatorURL + path)
                #expect(api.status == 401 && api.header("location") == nil, "\(path): \(api.status)")
            }
            // the same pages over plain HTTP with the cookie: filters and paging
            let cookie = [("cookie", "dtx_token=page-secret")]
            let filteredHTML = String(decoding: try await f.client.raw("GET", f.coordinatorURL + "/?mode=saga&status=compensated", headers: cookie).body, as: UTF8.self)
            #expect(filteredHTML.components(separatedBy: "<tr data-id=").count - 1 == 1)
            #expect(filteredHTML.contains("data-mode=\"saga\" data-status=\"compensated\""))
            let missing = try await f.client.raw("GET", f.coordinatorURL + "/ui/transactions/999999999", headers: cookie)
            #expect(missing.status == 404)
            let bad = try await f.client.raw("GET", f.coordinatorURL + "/?status=done", headers: cookie)
            #expect(bad.status == 400)
        }
    }

    @Test("the status page pages through every transaction, newest first, 25 a page")
    func statusPagePaging() async throws {
        try await CoordinatorFixture.with { f in
            for _ in 0..<27 { #expect(try await f.post(TransactionRequest(mode: .saga, productId: 1, quantity: 1)).status == 200) }
            let first = String(decoding: try await f.client.get(f.coordinatorURL + "/", timeout: .seconds(5)).body, as: UTF8.self)
            #expect(first.components(separatedBy: "<tr data-id=").count - 1 == 25)
            let older = try #require(first.range(of: "href=\"/?cursor=").map { first[$0.upperBound...].prefix { $0.isNumber } })
            let second = String(decoding: try await f.client.get(f.coordinatorURL + "/?cursor=\(older)", timeout: .seconds(5)).body, as: UTF8.self)
            #expect(second.components(separatedBy: "<tr data-id=").count - 1 == 2)
            #expect(second.contains("id=\"newest\""))
            #expect(!second.contains("id=\"older\""))
        }
    }

    @Test("--no-ui: no status page")
    func noUI() async throws {
        try await CoordinatorFixture.with(configure: { $0.statusPage = false }) { f in
            let status = try await f.client.get(f.coordinatorURL + "/", timeout: .seconds(5)).status
            #expect(status == 404)
        }
    }
}
