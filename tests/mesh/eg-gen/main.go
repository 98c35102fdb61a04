// Command eg-gen runs Envoy Gateway's own translators on
// examples/envoy-gateway and writes the xDS the Gateway's Envoy would get:
// listeners, clusters and routes, as JSON.
//
// It does what `egctl x translate` (same module, internal/cmd/egctl) does:
// load the resources, run the Gateway API translator (policies, Backend,
// EnvoyProxy) into Envoy Gateway's IR, then the xDS translator, which also
// applies EnvoyPatchPolicy. One thing differs: egctl gives the Gateway API
// translator no Wasm module cache, so it refuses every Wasm extension
// ("wasm cache is not initialized") and the route becomes a 500. Here the
// cache is a stand-in that pulls nothing: it records the image asked for and
// answers as Envoy Gateway's Wasm HTTP server does, with the URL Envoy
// fetches the module from (through the wasm_cluster) and its SHA-256.
//
// Output under -out: {listeners,clusters,routes}.json (arrays of Any,
// sorted by name) and sources.json (the SHA-256 of every input, checked by
// tests/mesh/test_eg_golden.py). Run it through scripts/mesh-golden.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"github.com/envoyproxy/gateway/internal/gatewayapi"
	"github.com/envoyproxy/gateway/internal/gatewayapi/resource"
	"github.com/envoyproxy/gateway/internal/logging"
	"github.com/envoyproxy/gateway/internal/wasm"
	"github.com/envoyproxy/gateway/internal/xds/translator"
)

// servingURL is what Envoy Gateway's Wasm HTTP server answers for a pulled
// module (https://envoy-gateway:18002/<name>.wasm, fetched through the
// wasm_cluster it adds); moduleChecksum stands for the module's SHA-256.
const (
	servingURL     = "https://envoy-gateway:18002/alternator-lb.wasm"
	moduleChecksum = "0000000000000000000000000000000000000000000000000000000000000000"
)

var inputs = []string{
	"tests/mesh/eg-gen/cluster.yaml",
	"examples/envoy-gateway/alternator-lb.yaml",
}

var generatorFiles = []string{
	"tests/mesh/eg-gen/main.go",
	"tests/mesh/eg-gen/go.mod",
	"tests/mesh/eg-gen/go.sum",
}

type pullRecorder struct {
	mu     sync.Mutex
	pulled []string
}

func (c *pullRecorder) Get(url string, _ *wasm.GetOptions) (string, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pulled = append(c.pulled, url)
	return servingURL, moduleChecksum, nil
}

func (c *pullRecorder) Start(context.Context) {}

func main() {
	repo := flag.String("repo", "../../..", "the repository's root")
	out := flag.String("out", "../golden/envoy-gateway", "where the golden files go")
	flag.Parse()

	sources := map[string]string{}
	var docs []string
	for _, f := range append(slices.Clone(inputs), generatorFiles...) {
		b, err := os.ReadFile(filepath.Join(*repo, f))
		if err != nil {
			fail("%v", err)
		}
		h := sha256.Sum256(b)
		sources[f] = hex.EncodeToString(h[:])
		if slices.Contains(inputs, f) {
			docs = append(docs, string(b))
		}
	}

	resources, err := resource.LoadResourcesFromYAMLBytes([]byte(strings.Join(docs, "\n---\n")), false, nil)
	if err != nil {
		fail("loading the manifests: %v", err)
	}
	cache := &pullRecorder{}
	quiet := logging.DefaultLogger(io.Discard, egv1a1.LogLevelInfo)
	gt := &gatewayapi.Translator{
		GatewayControllerName:   string(resources.GatewayClass.Spec.ControllerName),
		GatewayClassName:        gwapiv1.ObjectName(resources.GatewayClass.Name),
		EnvoyPatchPolicyEnabled: true, // README step 1 enables both
		BackendEnabled:          true,
		WasmCache:               cache,
		ControllerNamespace:     "envoy-gateway-system",
		Logger:                  quiet,
	}
	result, err := gt.Translate(context.Background(), resources)
	if err != nil {
		fail("the Gateway API translator: %v", err)
	}
	problems := append([]string{}, policyProblems(result)...)
	if len(result.XdsIR) != 1 {
		fail("expected one Gateway, got %d", len(result.XdsIR))
	}
	for key, ir := range result.XdsIR {
		xt := &translator.Translator{Logger: quiet, ControllerNamespace: "envoy-gateway-system"}
		table, err := xt.Translate(context.Background(), ir)
		if err != nil {
			fail("the xDS translator for %s: %v", key, err)
		}
		// EnvoyPatchPolicy results: a patch that did not apply is an error
		// in the policy's status, which a user sees there.
		for _, p := range ir.EnvoyPatchPolicies {
			if p.Status != nil {
				for _, a := range p.Status.Ancestors {
					for _, c := range a.Conditions {
						if c.Status != "True" {
							problems = append(problems, fmt.Sprintf("EnvoyPatchPolicy %s: %s: %s", p.Name, c.Reason, c.Message))
						}
					}
				}
			}
		}
		res := table.GetXdsResources()
		if err := os.MkdirAll(*out, 0o755); err != nil {
			fail("%v", err)
		}
		for kind, t := range map[string]string{"listeners": resourcev3.ListenerType, "clusters": resourcev3.ClusterType, "routes": resourcev3.RouteType} {
			var items []*anypb.Any
			for _, r := range res[t] {
				a, err := anypb.New(r.(proto.Message))
				if err != nil {
					fail("%v", err)
				}
				items = append(items, a)
			}
			slices.SortFunc(items, func(a, b *anypb.Any) int { return strings.Compare(name(a), name(b)) })
			write(filepath.Join(*out, kind+".json"), items)
		}
	}
	slices.Sort(cache.pulled)
	manifest := map[string]any{
		"generator":     "tests/mesh/eg-gen (scripts/mesh-golden)",
		"envoy_gateway": moduleVersion("github.com/envoyproxy/gateway"),
		"sources":       sources,
		"problems":      problems,
		"wasm":          map[string]any{"images_pulled": cache.pulled, "serving_url": servingURL, "sha256": moduleChecksum},
	}
	b, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		fail("%v", err)
	}
	if err := os.WriteFile(filepath.Join(*out, "sources.json"), append(b, '\n'), 0o644); err != nil {
		fail("%v", err)
	}
	fmt.Printf("envoy-gateway: %v; problems: %v\n", cache.pulled, problems)
}

// policyProblems lists the conditions other than True in the statuses of
// the policies the Gateway API translator wrote.
func policyProblems(r *gatewayapi.TranslateResult) []string {
	var out []string
	for _, p := range r.EnvoyExtensionPolicies {
		for _, a := range p.Status.Ancestors {
			for _, c := range a.Conditions {
				if c.Status != "True" {
					out = append(out, fmt.Sprintf("EnvoyExtensionPolicy %s: %s: %s", p.Name, c.Reason, c.Message))
				}
			}
		}
	}
	for _, p := range r.EnvoyPatchPolicies {
		for _, a := range p.Status.Ancestors {
			for _, c := range a.Conditions {
				if c.Status != "True" {
					out = append(out, fmt.Sprintf("EnvoyPatchPolicy %s: %s: %s", p.Name, c.Reason, c.Message))
				}
			}
		}
	}
	for _, rt := range r.HTTPRoutes {
		for _, pa := range rt.Status.Parents {
			for _, c := range pa.Conditions {
				if c.Status != "True" {
					out = append(out, fmt.Sprintf("HTTPRoute %s: %s: %s", rt.Name, c.Reason, c.Message))
				}
			}
		}
	}
	return out
}

func name(a *anypb.Any) string {
	m, err := a.UnmarshalNew()
	if err != nil {
		fail("%v", err)
	}
	f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("name"))
	return m.ProtoReflect().Get(f).String()
}

func write(path string, resources []*anypb.Any) {
	items := []any{}
	for _, r := range resources {
		b, err := protojson.Marshal(r)
		if err != nil {
			fail("%s: %v", path, err)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			fail("%v", err)
		}
		items = append(items, v)
	}
	b, err := json.MarshalIndent(items, "", "  ")
	if err != nil {
		fail("%v", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		fail("%v", err)
	}
}

func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				return d.Path + " " + d.Version
			}
		}
	}
	return path + " (unknown version)"
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "eg-gen: "+format+"\n", args...)
	os.Exit(1)
}
