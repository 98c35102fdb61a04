// Command istio-gen runs istiod's own configuration generator on
// examples/istio and writes what the egress gateway's istio-proxy would
// receive: its listeners, clusters and routes, and the extension
// configurations (ECDS) its listeners name, as JSON.
//
// There is no Kubernetes here. Istio's fake discovery server
// (istio.io/istio/pilot/test/xds) runs the real istiod pipeline (config
// stores, ServiceEntry and Kubernetes registries, push context, the xDS
// generators, EnvoyFilter patching, WasmPlugin translation) on in-memory
// objects, and this program talks ADS to it over an in-memory gRPC
// connection the way the gateway pod's istio-agent does, with the node
// identity and metadata that pod would send. What it writes is exactly what
// istiod would answer.
//
// Three variants, as examples/istio/README.md offers them: on the shared
// egress gateway, the WasmPlugin (10-clusters, 20-wasmplugin, 30-routing)
// and key route affinity (10-clusters, 20-envoyfilter-affinity,
// 30-routing); and the WasmPlugin on a gateway of its own, the manifests
// edited as the README's sed command edits them. cluster.yaml beside this
// file holds what the cluster itself would have: the namespaces, and both
// gateways' Services and Pods as Istio's gateway chart makes them;
// partner.yaml another team's egress through the shared gateway, so that
// the shared gateway's configuration is seen with other traffic on it.
//
// Output, under -out: <variant>/{listeners,clusters,routes,extension_configs}.json
// (each a JSON array of the resources as google.protobuf.Any, sorted by
// name, so Envoy or a test can load them as they are) and sources.json, the
// SHA-256 of every input file, which tests/mesh/test_istio_golden.py compares
// with the files in the repository.
//
// Run it through scripts/mesh-golden.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	pilotxds "istio.io/istio/pilot/pkg/xds"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/test"
	"istio.io/istio/pkg/wasm"

	_ "istio.io/istio/pkg/config/xds" // the Envoy types istiod knows, for protojson
)

// agentModulePath stands for the file the istio-agent would have pulled
// the WasmPlugin's OCI image to; the end-to-end test puts the module built
// by scripts/build there.
const agentModulePath = "/var/lib/istio/data/alternator-lb/plugin.wasm"

const (
	namespace    = "istio-egress"
	istioVersion = "1.31.0" // the proxy version istiod tailors its answer to (see README)
)

// gateway is a gateway pod of cluster.yaml, as its istio-agent presents
// itself to istiod: a release of Istio's gateway chart.
type gateway struct {
	release string
	podName string
	podIP   string
}

var (
	sharedGateway    = gateway{"istio-egressgateway", "istio-egressgateway-7c9d8b6f5-q4m2n", "10.244.1.17"}
	dedicatedGateway = gateway{"alternator-egress", "alternator-egress-5d9c7b8f4-x2x7q", "10.244.1.18"}
)

// labels are the pod's labels as the chart sets them: app from the release
// name, istio from it without "istio-".
func (g gateway) labels() map[string]string {
	return map[string]string{
		"app":                                 g.release,
		"istio":                               strings.TrimPrefix(g.release, "istio-"),
		"sidecar.istio.io/inject":             "true",
		"app.kubernetes.io/name":              g.release,
		"service.istio.io/canonical-name":     g.release,
		"service.istio.io/canonical-revision": "latest",
	}
}

// dedicatedEdits are examples/istio/README.md's sed substitutions that move
// the example to a gateway of its own (the test of the README checks that
// it says these).
var dedicatedEdits = [][2]string{
	{"istio: egressgateway", "istio: alternator-egress"},
	{"istio-egressgateway.istio-egress.svc", "alternator-egress.istio-egress.svc"},
}

// variant is one way examples/istio/README.md installs the filter.
type variant struct {
	name      string
	manifests []string // relative to the repository
	gw        gateway
	edits     [][2]string
}

var variants = []variant{
	{"wasmplugin", []string{
		"examples/istio/10-clusters.yaml",
		"examples/istio/20-wasmplugin.yaml",
		"examples/istio/30-routing.yaml",
		"tests/mesh/istio-gen/partner.yaml",
	}, sharedGateway, nil},
	{"affinity", []string{
		"examples/istio/10-clusters.yaml",
		"examples/istio/20-envoyfilter-affinity.yaml",
		"examples/istio/30-routing.yaml",
		"tests/mesh/istio-gen/partner.yaml",
	}, sharedGateway, nil},
	{"dedicated", []string{
		"examples/istio/10-clusters.yaml",
		"examples/istio/20-wasmplugin.yaml",
		"examples/istio/30-routing.yaml",
		"tests/mesh/istio-gen/partner.yaml",
	}, dedicatedGateway, dedicatedEdits},
}

// generatorFiles are the inputs besides the manifests: a change in any of
// them may change the output too.
var generatorFiles = []string{
	"tests/mesh/istio-gen/main.go",
	"tests/mesh/istio-gen/cluster.yaml",
	"tests/mesh/istio-gen/mesh.yaml",
	"tests/mesh/istio-gen/go.mod",
	"tests/mesh/istio-gen/go.sum",
}

func main() {
	repo := flag.String("repo", "../../..", "the repository's root")
	out := flag.String("out", "../golden/istio", "where the golden files go")
	flag.Parse()

	// istiod logs at info by default; its warnings (a patch that does not
	// apply, a skipped port) still show.
	opts := log.DefaultOptions()
	opts.SetDefaultOutputLevel(log.OverrideScopeName, log.WarnLevel)
	if err := log.Configure(opts); err != nil {
		fail("configuring istio's log: %v", err)
	}

	clusterObjects := read(*repo, "tests/mesh/istio-gen/cluster.yaml")
	meshConfig, err := mesh.ApplyMeshConfigDefaults(read(*repo, "tests/mesh/istio-gen/mesh.yaml"))
	if err != nil {
		fail("mesh.yaml: %v", err)
	}
	sources := map[string]string{}
	warnings := map[string][]string{}
	images := map[string][]string{}
	// Each variant's gateway pod as its istio-agent names it to istiod and
	// in its bootstrap's node (cluster: workload name and namespace).
	proxies := map[string]any{}
	for _, f := range generatorFiles {
		sources[f] = digest(read(*repo, f))
	}
	for _, v := range variants {
		var docs []string
		for _, m := range v.manifests {
			text := read(*repo, m)
			sources[m] = digest(text)
			// The README's sed runs on examples/istio/*.yaml only.
			if strings.HasPrefix(m, "examples/istio/") {
				for _, e := range v.edits {
					text = strings.ReplaceAll(text, e[0], e[1])
				}
			}
			docs = append(docs, text)
		}
		resources, w, err := generate(strings.Join(docs, "\n---\n"), clusterObjects, meshConfig, v.gw)
		warnings[v.name] = w
		if err != nil {
			fail("variant %s: %v", v.name, err)
		}
		dir := filepath.Join(*out, v.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fail("%v", err)
		}
		for _, kind := range []string{"listeners", "clusters", "routes", "extension_configs"} {
			write(filepath.Join(dir, kind+".json"), resources[kind])
		}
		// What Envoy gets: the istio-agent in the pod passes ECDS through its
		// own rewrite, which fetches remote Wasm code and names a local file.
		agent, pulled, err := asTheAgentPassesThem(resources["extension_configs"])
		if err != nil {
			fail("variant %s: the istio-agent's rewrite: %v", v.name, err)
		}
		write(filepath.Join(dir, "extension_configs.agent.json"), agent)
		images[v.name] = pulled
		proxies[v.name] = map[string]any{
			"id":            nodeID(v.gw),
			"cluster":       v.gw.release + "." + namespace,
			"ISTIO_VERSION": istioVersion,
		}
		fmt.Printf("%s: %d listeners, %d clusters, %d routes, %d extension configs\n", v.name,
			len(resources["listeners"]), len(resources["clusters"]), len(resources["routes"]),
			len(resources["extension_configs"]))
	}

	manifest := map[string]any{
		"generator":       "tests/mesh/istio-gen (scripts/mesh-golden)",
		"istio":           istioModuleVersion(),
		"proxies":         proxies,
		"dedicated_edits": dedicatedEdits,
		"sources":         sources,
		"warnings":        warnings,
		"agent": map[string]any{
			"module_path":   agentModulePath,
			"images_pulled": images,
		},
		"regenerated": "by scripts/mesh-golden when any of these files changes",
	}
	b, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		fail("%v", err)
	}
	if err := os.WriteFile(filepath.Join(*out, "sources.json"), append(b, '\n'), 0o644); err != nil {
		fail("%v", err)
	}
}

func nodeID(g gateway) string {
	return fmt.Sprintf("router~%s~%s.%s~%s.svc.cluster.local", g.podIP, g.podName, namespace, namespace)
}

func nodeMetadata(g gateway) model.NodeMetadata {
	return model.NodeMetadata{
		IstioVersion:   istioVersion,
		Labels:         g.labels(),
		Namespace:      namespace,
		WorkloadName:   g.release,
		ServiceAccount: g.release,
		ClusterID:      "Kubernetes",
		MeshID:         "cluster.local",
		InstanceIPs:    []string{g.podIP},
	}
}

// generate feeds istiod the manifests and the cluster's objects and returns
// the gateway's resources by kind.
func generate(manifests, clusterObjects string, meshConfig *meshconfig.MeshConfig, g gateway) (resources map[string][]*anypb.Any, warnings []string, err error) {
	configs, unknown, err := crd.ParseInputs(manifests) // also runs istiod's validation webhook's checks
	if err != nil {
		return nil, nil, fmt.Errorf("istio refuses the manifests: %w", err)
	}
	if len(unknown) > 0 {
		return nil, nil, fmt.Errorf("istio does not know the kind %s of %s", unknown[0].Kind, unknown[0].Name)
	}
	// The webhook also warns, without refusing.
	for _, c := range configs {
		s, ok := collections.All.FindByGroupVersionAliasesKind(c.GroupVersionKind)
		if !ok {
			return nil, nil, fmt.Errorf("no schema for %v", c.GroupVersionKind)
		}
		warning, err := s.ValidateConfig(c)
		if err != nil {
			return nil, nil, fmt.Errorf("%s %s/%s: %w", c.GroupVersionKind.Kind, c.Namespace, c.Name, err)
		}
		if warning != nil {
			warnings = append(warnings, fmt.Sprintf("%s %s/%s: %v", c.GroupVersionKind.Kind, c.Namespace, c.Name, warning))
		}
	}
	// The same creation time for all, so the order istiod gives equal
	// things is stable (it sorts by creation time, then name), and a
	// resource version as Kubernetes would give a new object (istiod passes
	// the WasmPlugin's on to the istio-agent; left empty, the in-memory
	// store would make one of the clock).
	for i := range configs {
		configs[i].CreationTimestamp = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		configs[i].ResourceVersion = "1"
	}

	out := map[string][]*anypb.Any{}
	err = test.Wrap(func(t test.Failer) {
		s := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
			Configs:                configs,
			KubernetesObjectString: clusterObjects,
			MeshConfig:             meshConfig,
		})
		md := nodeMetadata(g)
		ads := s.ConnectADS().WithID(nodeID(g)).WithMetadata(md).WithTimeout(20 * time.Second)
		node := md.ToStruct()

		out["clusters"] = fetch(t, ads, node, v3.ClusterType, nil)
		out["listeners"] = fetch(t, ads, node, v3.ListenerType, nil)
		routeNames, extensionNames := referenced(t, out["listeners"])
		if len(routeNames) > 0 {
			out["routes"] = fetch(t, ads, node, v3.RouteType, routeNames)
		}
		if len(extensionNames) > 0 {
			out["extension_configs"] = fetch(t, ads, node, v3.ExtensionConfigurationType, extensionNames)
		}
	})
	return out, warnings, err
}

// fetch asks for one type, as Envoy does on its ADS stream, and acks the
// answer. Pushes of other types that arrive meanwhile are acked and left.
func fetch(t test.Failer, ads *pilotxds.AdsTest, node *structpb.Struct, typeURL string, names []string) []*anypb.Any {
	req := &discovery.DiscoveryRequest{
		TypeUrl:       typeURL,
		ResourceNames: names,
		Node:          &core.Node{Id: ads.ID, Metadata: node},
	}
	ads.Request(t, req)
	for {
		resp := ads.ExpectResponse(t)
		ack := &discovery.DiscoveryRequest{
			TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce,
			ResourceNames: names, Node: req.Node,
		}
		if resp.TypeUrl != typeURL {
			ack.ResourceNames = nil
			ads.Request(t, ack)
			continue
		}
		ads.Request(t, ack)
		res := resp.Resources
		slices.SortFunc(res, func(a, b *anypb.Any) int { return strings.Compare(resourceName(t, a), resourceName(t, b)) })
		if len(names) > 0 {
			var got []string
			for _, r := range res {
				got = append(got, resourceName(t, r))
			}
			for _, n := range names {
				if !slices.Contains(got, n) {
					t.Fatalf("istiod did not answer %s for %s (got %v)", typeURL, n, got)
				}
			}
		}
		return res
	}
}

func resourceName(t test.Failer, a *anypb.Any) string {
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatalf("unpacking %s: %v", a.TypeUrl, err)
	}
	switch r := m.(type) {
	case *listener.Listener:
		return r.Name
	case *cluster.Cluster:
		return r.Name
	case *route.RouteConfiguration:
		return r.Name
	case *core.TypedExtensionConfig:
		return r.Name
	}
	t.Fatalf("unexpected resource %s", a.TypeUrl)
	return ""
}

// referenced lists the route configurations (RDS) and extension
// configurations (ECDS) the listeners ask for, as Envoy would then request.
func referenced(t test.Failer, listeners []*anypb.Any) (routes, extensions []string) {
	for _, a := range listeners {
		var l listener.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatalf("%v", err)
		}
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				tc := f.GetTypedConfig()
				if tc == nil || !tc.MessageIs(&hcm.HttpConnectionManager{}) {
					continue
				}
				var h hcm.HttpConnectionManager
				if err := tc.UnmarshalTo(&h); err != nil {
					t.Fatalf("%v", err)
				}
				if r := h.GetRds(); r != nil && !slices.Contains(routes, r.RouteConfigName) {
					routes = append(routes, r.RouteConfigName)
				}
				for _, hf := range h.HttpFilters {
					if cd := hf.GetConfigDiscovery(); cd != nil && !slices.Contains(extensions, hf.Name) {
						extensions = append(extensions, hf.Name)
					}
				}
			}
		}
	}
	slices.Sort(routes)
	slices.Sort(extensions)
	return routes, extensions
}

// write stores resources as a JSON array, keys sorted and indented, so the
// files are the same on every run (protojson's own spacing varies on
// purpose).
func write(path string, resources []*anypb.Any) {
	var items []any
	for _, r := range resources {
		b, err := protojson.MarshalOptions{}.Marshal(r)
		if err != nil {
			fail("%s: %v", path, err)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			fail("%s: %v", path, err)
		}
		items = append(items, v)
	}
	if items == nil {
		items = []any{}
	}
	b, err := json.MarshalIndent(items, "", "  ")
	if err != nil {
		fail("%s: %v", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		fail("%v", err)
	}
}

func istioModuleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "istio.io/istio" {
				return d.Path + " " + d.Version
			}
		}
	}
	return "istio.io/istio (unknown version)"
}

func read(repo, rel string) string {
	b, err := os.ReadFile(filepath.Join(repo, rel))
	if err != nil {
		fail("%v", err)
	}
	return string(b)
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "istio-gen: "+format+"\n", args...)
	os.Exit(1)
}

// asTheAgentPassesThem runs the istio-agent's own ECDS rewrite
// (pkg/wasm.MaybeConvertWasmExtensionConfig, what its xDS proxy does to each
// answer before Envoy sees it) on copies of the extension configurations.
// Its module cache is a stand-in that pulls nothing: it records the image
// asked for and answers agentModulePath.
func asTheAgentPassesThem(resources []*anypb.Any) ([]*anypb.Any, []string, error) {
	copies := make([]*anypb.Any, len(resources))
	for i, r := range resources {
		copies[i] = proto.Clone(r).(*anypb.Any)
	}
	cache := &pullRecorder{}
	if err := wasm.MaybeConvertWasmExtensionConfig(copies, cache); err != nil {
		return nil, nil, err
	}
	slices.Sort(cache.pulled)
	return copies, cache.pulled, nil
}

type pullRecorder struct {
	mu     sync.Mutex
	pulled []string
}

func (c *pullRecorder) Get(url string, _ wasm.GetOptions) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pulled = append(c.pulled, url)
	return agentModulePath, nil
}

func (c *pullRecorder) Cleanup() {}
