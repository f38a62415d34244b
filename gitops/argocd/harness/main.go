// argocd-lua-harness runs Argo CD resource customizations (health.lua, actions/discovery.lua,
// actions/<name>/action.lua) in Argo CD's own Lua VM: gopher-lua v1.1.2 (Lua 5.1) set up exactly as Argo CD
// v3.6.1 sets it up (package argocdlua is a copy of its util/lua/lua.go and oslib_safe.go), and runs upstream's
// test files (health_test.yaml, actions/action_test.yaml) the way upstream's `go test ./util/lua/` does, only
// stricter:
//
//   - health: every case runs twice, with the standard libraries (as Argo CD runs a built-in health.lua and as
//     upstream tests it) and without them (as Argo CD runs a health script from argocd-cm unless useOpenLibs is
//     set). Both must give exactly the expected status and message, so a script that needs `string` or `math`
//     fails here although upstream's test would pass it.
//   - discovery: runs without the standard libraries (as the API server runs it) and with them (as upstream's test
//     runs it); the discovered actions must equal the expected list (upstream only checks that each discovered
//     action is in it).
//   - actions: without the standard libraries, as the API server and upstream's test run them. The result must
//     equal the expected object after normalization (upstream's two-way diff ignores fields the result has and
//     the expected file lacks, so a key the action should have deleted would pass there).
//
// Usage:
//
//	argocd-lua-harness test DIR                      run DIR/health_test.yaml and DIR/actions/action_test.yaml
//	argocd-lua-harness health [-open-libs] -script FILE OBJ.yaml
//	argocd-lua-harness discovery [-open-libs] -script FILE OBJ.yaml
//	argocd-lua-harness action -script FILE [-param k=v]... OBJ.yaml
//
// `test` prints one JSON object per case ({"name", "ok", "detail"}) and exits 1 if any failed. The other
// commands print one JSON object: the result, plus for `action` the JSON merge patch that Argo CD's API server
// would send (RunResourceActionV2 -> patchResource: CreateMergePatch(live, returned)); on a script error they
// print {"error": "..."} and exit 1.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	jsonpatch "github.com/evanphx/json-patch"
	"sigs.k8s.io/yaml"

	"github.com/triton-llm-operator/gitops/argocd/harness/argocdlua"
)

type healthTests struct {
	Tests []struct {
		InputPath    string                 `json:"inputPath"`
		HealthStatus argocdlua.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string                     `json:"inputPath"`
		Result    []argocdlua.ResourceAction `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Input                string            `json:"input"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

type caseResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

func readObj(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

func readScript(path string) (string, error) {
	data, err := os.ReadFile(path)
	return string(data), err
}

// normalize is the harness's testNormalizer: a value that depends on the clock is replaced by a constant on both
// sides, as upstream's util/lua/custom_actions_test.go does for Rollout's spec.restartAt and for
// kubectl.kubernetes.io/restartedAt. Proposing these customizations upstream adds the same case there.
func normalize(obj map[string]any) map[string]any {
	data, _ := json.Marshal(obj)
	out := map[string]any{}
	_ = json.Unmarshal(data, &out) // one number type (float64) on both sides
	if out["kind"] == "LLMDeployment" && strings.HasPrefix(fmt.Sprint(out["apiVersion"]), "serving.llmops.dev/") {
		if meta, ok := out["metadata"].(map[string]any); ok {
			if ann, ok := meta["annotations"].(map[string]any); ok {
				if _, ok := ann["serving.llmops.dev/restartedAt"]; ok {
					ann["serving.llmops.dev/restartedAt"] = "0001-01-01T00:00:00Z"
				}
			}
		}
	}
	return out
}

// expectedObjects reads an expected action output: one object (old-style action) or a list of
// {k8sOperation, unstructuredObj} (new-style), as upstream's getExpectedObjectList.
func expectedObjects(path string) ([]map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) > 0 && data[0] == '-' {
		var list []map[string]any
		if err := yaml.Unmarshal(data, &list); err != nil {
			return nil, err
		}
		out := make([]map[string]any, 0, len(list))
		for _, item := range list {
			obj, ok := item["unstructuredObj"].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: an item without unstructuredObj", path)
			}
			out = append(out, obj)
		}
		return out, nil
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	return []map[string]any{obj}, nil
}

func identity(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	return fmt.Sprintf("%v/%v %v/%v", obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
}

// firstDifference names the first path where two JSON values differ, for a readable failure.
func firstDifference(want, got any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: want an object, got %s", path, short(got))
		}
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			wv, inW := w[k]
			gv, inG := g[k]
			switch {
			case !inW:
				return fmt.Sprintf("%s.%s: not expected, got %s", path, k, short(gv))
			case !inG:
				return fmt.Sprintf("%s.%s: missing, want %s", path, k, short(wv))
			}
			if d := firstDifference(wv, gv, path+"."+k); d != "" {
				return d
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: want %s, got %s", path, short(want), short(got))
		}
		for i := range w {
			if d := firstDifference(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	default:
		if !reflect.DeepEqual(want, got) {
			return fmt.Sprintf("%s: want %s, got %s", path, short(want), short(got))
		}
		return ""
	}
}

func short(v any) string {
	data, _ := json.Marshal(v)
	if len(data) > 200 {
		return string(data[:200]) + "..."
	}
	return string(data)
}

func sortedActions(actions []argocdlua.ResourceAction) []argocdlua.ResourceAction {
	out := append([]argocdlua.ResourceAction{}, actions...)
	for i := range out {
		if len(out[i].Params) == 0 {
			out[i].Params = nil
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func runTests(dir string) ([]caseResult, error) {
	var results []caseResult
	add := func(name string, err error) {
		if err != nil {
			results = append(results, caseResult{Name: name, OK: false, Detail: err.Error()})
		} else {
			results = append(results, caseResult{Name: name, OK: true})
		}
	}

	healthFile := filepath.Join(dir, "health_test.yaml")
	if data, err := os.ReadFile(healthFile); err == nil {
		var suite healthTests
		if err := yaml.UnmarshalStrict(data, &suite); err != nil {
			return nil, fmt.Errorf("%s: %w", healthFile, err)
		}
		script, err := readScript(filepath.Join(dir, "health.lua"))
		if err != nil {
			return nil, err
		}
		for _, tc := range suite.Tests {
			for _, openLibs := range []bool{true, false} {
				name := fmt.Sprintf("health/%s (openLibs=%v)", tc.InputPath, openLibs)
				add(name, func() error {
					obj, err := readObj(filepath.Join(dir, tc.InputPath))
					if err != nil {
						return err
					}
					got, err := argocdlua.VM{UseOpenLibs: openLibs}.ExecuteHealthLua(obj, script)
					if err != nil {
						return fmt.Errorf("script error: %w", err)
					}
					if got == nil || *got != tc.HealthStatus {
						return fmt.Errorf("want %+v, got %+v", tc.HealthStatus, got)
					}
					return nil
				}())
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}

	actionsDir := filepath.Join(dir, "actions")
	actionFile := filepath.Join(actionsDir, "action_test.yaml")
	data, err := os.ReadFile(actionFile)
	if errors.Is(err, os.ErrNotExist) {
		return results, nil
	} else if err != nil {
		return nil, err
	}
	var suite actionTests
	if err := yaml.UnmarshalStrict(data, &suite); err != nil {
		return nil, fmt.Errorf("%s: %w", actionFile, err)
	}
	discovery, err := readScript(filepath.Join(actionsDir, "discovery.lua"))
	if err != nil {
		return nil, err
	}
	for _, tc := range suite.DiscoveryTests {
		for _, openLibs := range []bool{false, true} {
			name := fmt.Sprintf("discovery/%s (openLibs=%v)", tc.InputPath, openLibs)
			add(name, func() error {
				obj, err := readObj(filepath.Join(actionsDir, tc.InputPath))
				if err != nil {
					return err
				}
				got, err := argocdlua.VM{UseOpenLibs: openLibs}.ExecuteResourceActionDiscovery(obj, []string{discovery})
				if err != nil {
					return fmt.Errorf("script error: %w", err)
				}
				want, have := sortedActions(tc.Result), sortedActions(got)
				if !reflect.DeepEqual(want, have) {
					return fmt.Errorf("want %s, got %s", short(want), short(have))
				}
				return nil
			}())
		}
	}
	for _, tc := range suite.ActionTests {
		name := fmt.Sprintf("actions/%s/%s", tc.Action, tc.InputPath)
		add(name, func() error {
			script, err := readScript(filepath.Join(actionsDir, tc.Action, "action.lua"))
			if err != nil {
				return err
			}
			source, err := readObj(filepath.Join(actionsDir, tc.InputPath))
			if err != nil {
				return err
			}
			var params []argocdlua.Param
			for k, v := range tc.Parameters {
				params = append(params, argocdlua.Param{Name: k, Value: v})
			}
			impacted, err := argocdlua.VM{}.ExecuteResourceAction(source, script, params)
			if tc.ExpectedErrorMessage != "" {
				if err == nil {
					return fmt.Errorf("want error %q, got none", tc.ExpectedErrorMessage)
				}
				if err.Error() != tc.ExpectedErrorMessage {
					return fmt.Errorf("want error %q, got %q", tc.ExpectedErrorMessage, err.Error())
				}
				return nil
			}
			if err != nil {
				return fmt.Errorf("script error: %w", err)
			}
			expected, err := expectedObjects(filepath.Join(actionsDir, tc.ExpectedOutputPath))
			if err != nil {
				return err
			}
			if len(impacted) != len(expected) {
				return fmt.Errorf("want %d impacted resource(s), got %d", len(expected), len(impacted))
			}
			for _, res := range impacted {
				var match map[string]any
				for _, e := range expected {
					if identity(e) == identity(res.UnstructuredObj) {
						match = e
						break
					}
				}
				if match == nil {
					return fmt.Errorf("no expected object for %s", identity(res.UnstructuredObj))
				}
				if res.K8SOperation == argocdlua.PatchOperation && identity(res.UnstructuredObj) != identity(source) {
					return fmt.Errorf("a patch must keep the source's apiVersion, kind, namespace and name: %s vs %s",
						identity(res.UnstructuredObj), identity(source))
				}
				if d := firstDifference(normalize(match), normalize(res.UnstructuredObj), ""); d != "" {
					return fmt.Errorf("output differs from %s: %s", tc.ExpectedOutputPath, d)
				}
			}
			return nil
		}())
	}
	return results, nil
}

type paramFlags []argocdlua.Param

func (p *paramFlags) String() string { return fmt.Sprint(*p) }
func (p *paramFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want k=v, got %q", v)
	}
	*p = append(*p, argocdlua.Param{Name: k, Value: val})
	return nil
}

func emit(v any) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func fail(err error) {
	emit(map[string]string{"error": err.Error()})
	os.Exit(1)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: argocd-lua-harness test DIR | health|discovery [-open-libs] -script FILE OBJ.yaml | "+
		"action -script FILE [-param k=v]... OBJ.yaml")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	script := fs.String("script", "", "the Lua script")
	openLibs := fs.Bool("open-libs", false, "open Lua's standard libraries (Argo CD's useOpenLibs)")
	var params paramFlags
	fs.Var(&params, "param", "an action parameter k=v (repeatable)")
	_ = fs.Parse(os.Args[2:])
	if fs.NArg() != 1 {
		usage()
	}
	arg := fs.Arg(0)

	switch cmd {
	case "test":
		results, err := runTests(arg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		failed := 0
		for _, r := range results {
			emit(r)
			if !r.OK {
				failed++
			}
		}
		if failed > 0 || len(results) == 0 {
			os.Exit(1)
		}
	case "health", "discovery", "action":
		if *script == "" {
			usage()
		}
		text, err := readScript(*script)
		if err != nil {
			fail(err)
		}
		obj, err := readObj(arg)
		if err != nil {
			fail(err)
		}
		vm := argocdlua.VM{UseOpenLibs: *openLibs}
		switch cmd {
		case "health":
			got, err := vm.ExecuteHealthLua(obj, text)
			if err != nil {
				fail(err)
			}
			emit(got)
		case "discovery":
			got, err := vm.ExecuteResourceActionDiscovery(obj, []string{text})
			if err != nil {
				fail(err)
			}
			emit(sortedActions(got))
		case "action":
			live, _ := json.Marshal(obj)
			impacted, err := argocdlua.VM{}.ExecuteResourceAction(obj, text, params)
			if err != nil {
				fail(err)
			}
			out := map[string]any{"impacted": impacted}
			for _, res := range impacted {
				if res.K8SOperation == argocdlua.PatchOperation {
					returned, _ := json.Marshal(res.UnstructuredObj)
					patch, err := jsonpatch.CreateMergePatch(live, returned)
					if err != nil {
						fail(err)
					}
					out["patch"] = json.RawMessage(patch)
				}
			}
			emit(out)
		}
	default:
		usage()
	}
}
