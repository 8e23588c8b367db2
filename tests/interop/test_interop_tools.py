"""Unit tests for the interop helpers (stdlib only, no validator, no network).

    python3 -m unittest discover -s tests/interop -p 'test_*.py'
"""

import io
import json
import os
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from contextlib import redirect_stderr, redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MOCKUPS = os.path.join(ROOT, "redfish-mockups")
sys.path.insert(0, HERE)

import compare_baseline  # noqa: E402
import rsv_run  # noqa: E402
import serve_mockup  # noqa: E402

EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"


def mockup_dirs():
    return sorted(d for d in os.listdir(MOCKUPS) if os.path.isdir(os.path.join(MOCKUPS, d)))


class MetadataTest(unittest.TestCase):
    def test_golden_files_are_current(self):
        for d in mockup_dirs():
            m = serve_mockup.Mockup(os.path.join(MOCKUPS, d))
            with open(os.path.join(HERE, "metadata-golden", d + ".metadata.xml"), "rb") as f:
                self.assertEqual(f.read(), m.metadata, d)
            with open(os.path.join(HERE, "metadata-golden", d + ".odata.json"), "rb") as f:
                self.assertEqual(f.read(), m.odata + b"\n", d)

    def test_every_reference_resolves_in_the_local_csdl(self):
        for d in mockup_dirs():
            root = ET.fromstring(serve_mockup.Mockup(os.path.join(MOCKUPS, d)).metadata)
            refs = root.findall(EDMX + "Reference")
            self.assertTrue(refs, d)
            for ref in refs:
                uri = ref.get("Uri")
                self.assertTrue(uri.startswith(serve_mockup.DMTF_SCHEMA_BASE), uri)
                path = os.path.join(HERE, "csdl", uri.rsplit("/", 1)[1])
                self.assertTrue(os.path.isfile(path), "{}: {}".format(d, uri))
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for inc in ref.findall(EDMX + "Include"):
                    self.assertIn('Namespace="{}"'.format(inc.get("Namespace")), text, d)
            container = root.find(EDMX + "DataServices/{http://docs.oasis-open.org/odata/ns/edm}Schema")
            self.assertEqual(container.get("Namespace"), "Service")

    def test_oem_types_are_left_out(self):
        types = set()
        serve_mockup.collect_types(
            {
                "@odata.type": "#Manager.v1_10_0.Manager",
                "Oem": {"Dell": {"@odata.type": "#DellManager.v1_0_0.DellManager"}},
                "Actions": {"Oem": {"@odata.type": "#X.v1_0_0.Y"}},
                "Links": {"Items": [{"@odata.type": "#Settings.v1_3_0.Settings"}]},
            },
            types,
        )
        self.assertEqual(types, {"#Manager.v1_10_0.Manager", "#Settings.v1_3_0.Settings"})
        xml = serve_mockup.generate_metadata(types | {"#ManagerCollection.ManagerCollection"}, "#ServiceRoot.v1_5_0.ServiceRoot")
        self.assertIn('<edmx:Include Namespace="ManagerCollection"/>', xml)
        self.assertIn('<edmx:Include Namespace="Manager.v1_10_0"/>', xml)
        self.assertIn('Extends="ServiceRoot.v1_5_0.ServiceContainer"', xml)
        self.assertNotIn("Dell", xml)

    def test_versions_sort_numerically(self):
        xml = serve_mockup.generate_metadata(
            {"#Chassis.v1_10_0.Chassis", "#Chassis.v1_9_0.Chassis"}, "#ServiceRoot.v1_5_0.ServiceRoot"
        )
        self.assertLess(xml.index("Chassis.v1_9_0"), xml.index("Chassis.v1_10_0"))


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        port_file = os.path.join(cls.tmp.name, "port")
        cls.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "serve_mockup.py"), os.path.join(MOCKUPS, "dmtf-public-rackmount1"),
             "--port-file", port_file],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        line = cls.proc.stdout.readline().decode()
        if not line.startswith("listening on https://"):
            raise RuntimeError("serve_mockup.py did not start: " + line)
        cls.base = line.split()[-1]
        cls.ctx = ssl.create_default_context()
        cls.ctx.check_hostname = False
        cls.ctx.verify_mode = ssl.CERT_NONE

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(10)
        cls.proc.stdout.close()
        cls.tmp.cleanup()

    def get(self, path, auth=True):
        req = urllib.request.Request(self.base + path)
        if auth:
            req.add_header("Authorization", "Basic YWRtaW46eA==")  # admin:x
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def test_root_with_and_without_slash(self):
        a, b = self.get("/redfish/v1", auth=False), self.get("/redfish/v1/", auth=False)
        self.assertEqual(a[0], 200)
        self.assertEqual(a[2], b[2])
        self.assertNotIn("@Redfish.Copyright", json.loads(a[2]))
        self.assertEqual(a[1]["OData-Version"], "4.0")

    def test_auth_needed_below_the_root(self):
        self.assertEqual(self.get("/redfish/v1/Systems", auth=False)[0], 401)
        self.assertEqual(self.get("/redfish/v1/Systems/")[0], 200)

    def test_metadata_and_odata(self):
        status, headers, body = self.get("/redfish/v1/$metadata", auth=False)
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("application/xml"))
        ET.fromstring(body)
        status, _, body = self.get("/redfish/v1/odata", auth=False)
        self.assertEqual(json.loads(body)["value"][0], {"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"})

    def test_missing_and_traversal(self):
        self.assertEqual(self.get("/redfish/v1/NoSuchThing")[0], 404)
        self.assertEqual(self.get("/redfish/v1/../../../etc")[0], 404)


class NormaliseTest(unittest.TestCase):
    def test_values_are_masked(self):
        n = rsv_run.normalise(
            "/redfish/v1/Managers/HGX_BMC_0/",
            "/Id",
            "Invalid Identifier Error: The identifier 'BMC_0' does not match the last URI segment for the resource.",
        )
        self.assertEqual(
            n,
            "/redfish/v1/Managers/HGX_BMC_0\t/Id\tInvalid Identifier Error: The identifier '...' does not match "
            "the last URI segment for the resource.",
        )
        a = rsv_run.normalise_kind(
            "Property Value Error: The property 'Alias' contains 'usb' which is not one of the listed allowable "
            "values. Did you mean 'Usb'?"
        )
        b = rsv_run.normalise_kind(
            "Property Value Error: The property 'Alias' is not one of the listed allowable values: None, Pxe."
        )
        self.assertEqual(a, b)

    def test_indices_and_resource_level(self):
        self.assertEqual(rsv_run.normalise_prop("/Members/12"), "/Members/*")
        self.assertEqual(rsv_run.normalise_prop("/Status/Conditions/0/OriginOfCondition"),
                         "/Status/Conditions/*/OriginOfCondition")
        self.assertEqual(rsv_run.normalise_prop(""), "-")
        self.assertEqual(rsv_run.normalise_uri("/redfish/v1/"), "/redfish/v1")


class CompareTest(unittest.TestCase):
    def run_compare(self, failures, *baselines):
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, text in enumerate((failures,) + baselines):
                p = os.path.join(tmp, "f%d" % i)
                with open(p, "w") as f:
                    f.write(text)
                paths.append(p)
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                rc = compare_baseline.main(paths)
            return rc, out.getvalue()

    def test_subset_passes_and_new_fails(self):
        self.assertEqual(self.run_compare("a\tb\tc\n", "# head\na\tb\tc\n")[0], 0)
        self.assertEqual(self.run_compare("", "")[0], 0)
        rc, out = self.run_compare("a\tb\tc\nx\ty\tz\n", "a\tb\tc\n", "# only a comment\n")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "NEW\tx\ty\tz\n")

    def test_union_of_baselines(self):
        self.assertEqual(self.run_compare("a\tb\tc\nx\ty\tz\n", "a\tb\tc\n", "x\ty\tz\n")[0], 0)


if __name__ == "__main__":
    unittest.main()
