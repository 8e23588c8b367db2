"""Helper of scripts/vmrack/up.sh: the spec, the domain XML, the emulator
configs and the output line. Standard library only (runs under any python3).

  rack.py plan WORKDIR SPEC.json POOL_PATH ACCEL
      validates the spec, writes WORKDIR/rack.json, WORKDIR/NAME.xml and
      WORKDIR/bmc-NAME/emulator.conf, prints one TAB-separated line per node:
      name domain uuid bmc_ip bmc_port disk_path disk_gib username password
  rack.py check SPEC.json
      validates the spec only
  rack.py output WORKDIR
      prints the JSON line of up.sh (reads WORKDIR/rack.json and each
      WORKDIR/bmc-NAME/fingerprint)
  rack.py field WORKDIR KEY
      prints one line per node with that key of rack.json (for down.sh)
"""

import ipaddress
import json
import os
import re
import sys
import uuid
from xml.sax.saxutils import escape, quoteattr

OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'
OVMF_VARS_SECBOOT = '/usr/share/OVMF/OVMF_VARS_4M.ms.fd'
QEMU = '/usr/bin/qemu-system-x86_64'
# uuid5 namespace of the domains' UUIDs: uuid5(NAMESPACE_URL, "kiln-vmrack")
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, 'kiln-vmrack')
# What SUSHY_EMULATOR_STORAGE_POOL names on a "media": "fail" BMC.
MISSING_POOL = 'kiln-vmrack-no-such-pool'

NODE_KEYS = {
    'name', 'disk_gib', 'memory_mib', 'vcpus', 'nic', 'ssh_port', 'bmc_ip',
    'bmc_port', 'mac', 'media', 'username', 'password', 'serial',
}
MEDIA_MODES = ('ok', 'refuse', 'fail')


class SpecError(Exception):
    pass


def _int(node, key, default, lo, hi):
    v = node.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SpecError('node %r: %s must be an integer in %d..%d, not %r'
                        % (node.get('name'), key, lo, hi, v))
    return v


def normalize(spec, workdir, pool_path, accel):
    if not isinstance(spec, dict):
        raise SpecError('the spec must be a JSON object')
    unknown = set(spec) - {'prefix', 'nodes'}
    if unknown:
        raise SpecError('unknown top-level keys: %s' % ', '.join(sorted(unknown)))
    prefix = spec.get('prefix')
    if not isinstance(prefix, str) or not re.fullmatch(r'[a-z0-9][a-z0-9-]{0,30}', prefix):
        raise SpecError('prefix must match [a-z0-9][a-z0-9-]{0,30}, not %r' % (prefix,))
    nodes = spec.get('nodes')
    if not isinstance(nodes, list) or not nodes:
        raise SpecError('nodes must be a non-empty list')

    out, seen_names, seen_bmc, seen_ssh, seen_mac = [], set(), set(), set(), set()
    for node in nodes:
        if not isinstance(node, dict):
            raise SpecError('each node must be a JSON object')
        name = node.get('name')
        if not isinstance(name, str) or not re.fullmatch(r'[a-z0-9][a-z0-9-]{0,30}', name):
            raise SpecError('node name must match [a-z0-9][a-z0-9-]{0,30}, not %r' % (name,))
        unknown = set(node) - NODE_KEYS
        if unknown:
            raise SpecError('node %r: unknown keys: %s' % (name, ', '.join(sorted(unknown))))
        if name in seen_names:
            raise SpecError('node name %r twice' % name)
        seen_names.add(name)

        domain = '%s-%s' % (prefix, name)
        uid = str(uuid.uuid5(NAMESPACE, '%s/%s' % (prefix, name)))

        nic = node.get('nic', True)
        if not isinstance(nic, bool):
            raise SpecError('node %r: nic must be true or false' % name)
        ssh_port = mac = None
        if nic:
            if 'ssh_port' not in node:
                raise SpecError('node %r: ssh_port is required when nic is true' % name)
            ssh_port = _int(node, 'ssh_port', None, 1024, 65535)
            if ssh_port in seen_ssh:
                raise SpecError('node %r: ssh_port %d twice' % (name, ssh_port))
            seen_ssh.add(ssh_port)
            u = uuid.UUID(uid).bytes
            mac = node.get('mac', '52:54:00:%02x:%02x:%02x' % (u[0], u[1], u[2]))
            if not isinstance(mac, str) or not re.fullmatch(r'([0-9a-f]{2}:){5}[0-9a-f]{2}', mac.lower()) \
                    or int(mac[:2], 16) & 1:
                raise SpecError('node %r: mac must be a unicast aa:bb:cc:dd:ee:ff, not %r' % (name, mac))
            mac = mac.lower()
            if mac in seen_mac:
                raise SpecError('node %r: mac %s twice' % (name, mac))
            seen_mac.add(mac)
        elif 'ssh_port' in node or 'mac' in node:
            raise SpecError('node %r: ssh_port and mac need nic: true' % name)

        bmc_ip = node.get('bmc_ip')
        try:
            ip = ipaddress.IPv4Address(bmc_ip)
        except (ipaddress.AddressValueError, ValueError, TypeError):
            raise SpecError('node %r: bmc_ip must be an IPv4 address, not %r' % (name, bmc_ip))
        if not ip.is_loopback:
            raise SpecError('node %r: bmc_ip %s is not in 127.0.0.0/8' % (name, ip))
        bmc_port = _int(node, 'bmc_port', 8443, 1, 65535)
        if (str(ip), bmc_port) in seen_bmc:
            raise SpecError('node %r: bmc %s:%d twice' % (name, ip, bmc_port))
        seen_bmc.add((str(ip), bmc_port))

        media = node.get('media', 'ok')
        if media not in MEDIA_MODES:
            raise SpecError('node %r: media must be one of %s, not %r' % (name, ', '.join(MEDIA_MODES), media))
        serial = node.get('serial', 'kiln-%s' % name)
        # virtio-blk serials are at most 20 bytes (VIRTIO_BLK_ID_BYTES)
        if not isinstance(serial, str) or not re.fullmatch(r'[A-Za-z0-9._-]{1,20}', serial):
            raise SpecError('node %r: disk serial %r: at most 20 of [A-Za-z0-9._-] '
                            '(give "serial" for long names)' % (name, serial))
        username = node.get('username', 'admin')
        password = node.get('password', 'vmrack-pass')
        for k, v in (('username', username), ('password', password)):
            if not isinstance(v, str) or not re.fullmatch(r'[!-~]{1,64}', v) or ':' in v and k == 'username':
                raise SpecError('node %r: %s must be 1-64 printable ASCII characters' % (name, k))

        bmc_dir = os.path.join(workdir, 'bmc-%s' % name)
        out.append({
            'name': name,
            'domain': domain,
            'uuid': uid,
            'disk_gib': _int(node, 'disk_gib', 3, 1, 4096),
            'memory_mib': _int(node, 'memory_mib', 1024, 128, 1 << 20),
            'vcpus': _int(node, 'vcpus', 2, 1, 64),
            'nic': nic,
            'ssh_port': ssh_port,
            'mac': mac,
            'bmc_ip': str(ip),
            'bmc_port': bmc_port,
            'media': media,
            'serial': serial,
            'username': username,
            'password': password,
            'disk': os.path.join(pool_path, '%s.qcow2' % domain),
            'nvram': os.path.join(workdir, 'nvram', '%s_VARS.nosecboot.fd' % domain),
            'serial_log': os.path.join(workdir, '%s-serial.log' % name),
            'xml': os.path.join(workdir, '%s.xml' % name),
            'bmc_dir': bmc_dir,
        })
    return {'prefix': prefix, 'accel': accel, 'pool_path': pool_path, 'nodes': out}


def domain_xml(n, accel):
    a = quoteattr
    if accel == 'kvm':
        dtype, features, cpu = 'kvm', '', "<cpu mode='host-passthrough' check='none'/>"
    else:
        dtype = 'qemu'
        # QEMU 7.2's default TCG translation cache is 1 GiB: RSS 1.5 GB for a
        # 1 GiB guest; 256 MiB brings it to ~750 MB (VM-LAB.md).
        features = "<tcg><tb-cache unit='MiB'>256</tb-cache></tcg>"
        cpu = "<cpu mode='maximum' check='none'/>"
    net = ''
    if n['nic']:
        # slirp user networking: the guest sees 10.0.2.0/24, the host's
        # loopback is 10.0.2.2, and only SSH is forwarded (to 127.0.0.1).
        # bus/addr: without them QEMU puts the NIC on a slot libvirt already
        # gave a pcie-root-port. romfile='': no iPXE ROM (OVMF has its own
        # virtio-net driver), so nothing tries PXE from an unconfigured slirp.
        net = """
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value=%s/>
    <qemu:arg value='-device'/>
    <qemu:arg value=%s/>
  </qemu:commandline>""" % (
            a('user,id=kilnnet0,hostfwd=tcp:127.0.0.1:%d-:22' % n['ssh_port']),
            a('virtio-net-pci,netdev=kilnnet0,bus=pcie.0,addr=0x10,romfile=,mac=%s' % n['mac']))
    log = a(n['serial_log'])
    return """<domain type=%(dtype)s xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <!-- written by kiln scripts/vmrack/up.sh -->
  <name>%(domain)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='MiB'>%(mem)d</memory>
  <vcpu>%(vcpus)d</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' secure='no' type='pflash'>%(code)s</loader>
    <nvram template=%(vars)s>%(nvram)s</nvram>
  </os>
  <features><acpi/><apic/>%(features)s</features>
  %(cpu)s
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>%(qemu)s</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file=%(disk)s/>
      <target dev='vda' bus='virtio'/>
      <serial>%(serial)s</serial>
      <boot order='1'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path=%(log)s append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path=%(log)s append='on'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>%(net)s
</domain>
""" % {
        'dtype': a(dtype), 'domain': escape(n['domain']), 'uuid': n['uuid'],
        'mem': n['memory_mib'], 'vcpus': n['vcpus'], 'code': escape(OVMF_CODE),
        'vars': a(OVMF_VARS), 'nvram': escape(n['nvram']), 'features': features,
        'cpu': cpu, 'qemu': escape(QEMU), 'disk': a(n['disk']),
        'serial': escape(n['serial']), 'log': log, 'net': net,
    }


def emulator_conf(n):
    d = n['bmc_dir']
    conf = {
        'SUSHY_EMULATOR_LISTEN_IP': n['bmc_ip'],
        'SUSHY_EMULATOR_LISTEN_PORT': n['bmc_port'],
        'SUSHY_EMULATOR_SSL_CERT': os.path.join(d, 'cert.pem'),
        'SUSHY_EMULATOR_SSL_KEY': os.path.join(d, 'key.pem'),
        'SUSHY_EMULATOR_AUTH_FILE': os.path.join(d, 'htpasswd'),
        'SUSHY_EMULATOR_STATE_DIR': os.path.join(d, 'state'),
        'SUSHY_EMULATOR_FEATURE_SET': 'full',
        'SUSHY_EMULATOR_LIBVIRT_URI': 'qemu:///system',
        # This BMC serves exactly one system (the others answer 404).
        'SUSHY_EMULATOR_ALLOWED_INSTANCES': [n['uuid']],
        'SUSHY_EMULATOR_IGNORE_BOOT_DEVICE': False,
        'SUSHY_EMULATOR_BOOT_LOADER_MAP': {
            'UEFI': {'x86_64': OVMF_CODE}, 'Legacy': {'x86_64': None}},
        # A PATCH of BootSourceOverrideMode rebuilds <loader>/<nvram> from
        # these; the defaults are the 2 MiB OVMF_VARS.fd, which does not fit
        # OVMF_CODE_4M.fd.
        'SUSHY_EMULATOR_SECURE_BOOT_DISABLED_NVRAM': OVMF_VARS,
        'SUSHY_EMULATOR_SECURE_BOOT_ENABLED_NVRAM': OVMF_VARS_SECBOOT,
        'SUSHY_EMULATOR_VMEDIA_DEVICES': {
            'Cd': {'Name': 'Virtual CD', 'MediaTypes': ['CD', 'DVD']}},
        'SUSHY_EMULATOR_VMEDIA_VERIFY_SSL': False,
    }
    if n['media'] == 'refuse':
        # InsertMedia checks the image URL's address family before anything
        # else: every http://127.0.0.1/... or http://10.0.2.2/... URL is
        # answered 400 "IPv6 address required but got IPv4 address: ...".
        conf['SUSHY_EMULATOR_VIRTUAL_MEDIA_IP_FAMILY'] = '6'
    elif n['media'] == 'fail':
        # InsertMedia downloads the image, then cannot upload it to the
        # hypervisor: 500 "Storage pool not found: ...".
        conf['SUSHY_EMULATOR_STORAGE_POOL'] = MISSING_POOL
    lines = ['# Written by kiln scripts/vmrack/up.sh (node %s, media %s)' % (n['name'], n['media'])]
    lines += ['%s = %r' % (k, v) for k, v in conf.items()]
    return '\n'.join(lines) + '\n'


def read_spec(spec_path):
    try:
        with open(spec_path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SpecError('cannot read %s: %s' % (spec_path, e))


def cmd_plan(workdir, spec_path, pool_path, accel):
    rack = normalize(read_spec(spec_path), workdir, pool_path, accel)
    os.makedirs(os.path.join(workdir, 'nvram'), exist_ok=True)
    for n in rack['nodes']:
        with open(n['xml'], 'w') as f:
            f.write(domain_xml(n, accel))
        os.makedirs(n['bmc_dir'], exist_ok=True)
        with open(os.path.join(n['bmc_dir'], 'emulator.conf'), 'w') as f:
            f.write(emulator_conf(n))
    tmp = os.path.join(workdir, 'rack.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(rack, f, indent=1)
    os.rename(tmp, os.path.join(workdir, 'rack.json'))
    for n in rack['nodes']:
        print('\t'.join(str(n[k]) for k in (
            'name', 'domain', 'uuid', 'bmc_ip', 'bmc_port', 'disk', 'disk_gib',
            'username', 'password')))


def load(workdir):
    with open(os.path.join(workdir, 'rack.json')) as f:
        return json.load(f)


def cmd_output(workdir):
    rack = load(workdir)
    nodes = []
    for n in rack['nodes']:
        with open(os.path.join(n['bmc_dir'], 'fingerprint')) as f:
            fp = f.read().strip()
        nodes.append({
            'name': n['name'],
            'domain': n['domain'],
            'uuid': n['uuid'],
            'bmc_url': 'https://%s:%d' % (n['bmc_ip'], n['bmc_port']),
            'system': '/redfish/v1/Systems/%s' % n['uuid'],
            'manager': '/redfish/v1/Managers/%s' % n['uuid'],
            'username': n['username'],
            'password': n['password'],
            'fingerprint': fp,
            'cert': os.path.join(n['bmc_dir'], 'cert.pem'),
            'ssh': '127.0.0.1:%d' % n['ssh_port'] if n['nic'] else None,
            'mac': n['mac'],
            'media': n['media'],
            'serial_log': n['serial_log'],
            'disk': n['disk'],
            'disk_serial': n['serial'],
        })
    print(json.dumps({'accel': rack['accel'], 'nodes': nodes}, separators=(',', ':')))


def cmd_field(workdir, key):
    for n in load(workdir)['nodes']:
        print(n[key])


def main(argv):
    try:
        if len(argv) == 6 and argv[1] == 'plan':
            cmd_plan(*argv[2:])
        elif len(argv) == 3 and argv[1] == 'check':
            normalize(read_spec(argv[2]), '/nonexistent', '/nonexistent', 'tcg')
        elif len(argv) == 3 and argv[1] == 'output':
            cmd_output(argv[2])
        elif len(argv) == 4 and argv[1] == 'field':
            cmd_field(argv[2], argv[3])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except SpecError as e:
        print('spec: %s' % e, file=sys.stderr)
        return 3
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
