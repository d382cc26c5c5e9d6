//! The agent's one reader of `/proc/<pid>/mountinfo` lines and of the kernel's `MAJ:MIN`
//! device numbers (mountinfo's third field, a sysfs block device's `dev` file).

/// The fields of one mountinfo line the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MountInfo<'a> {
    /// `st_dev` of the mounted file system: the block device for a disk's file system.
    pub(crate) dev: (u32, u32),
    /// Where it is mounted, relative to the reading process's root, as the kernel escapes it
    /// (`\040` for a space).
    pub(crate) mount_point: &'a str,
    pub(crate) fstype: &'a str,
    pub(crate) source: &'a str,
}

/// Parses `id parent MAJ:MIN root mount_point options [optional…] - fstype source super_options`;
/// `None` for a line that does not have that shape.
pub(crate) fn parse_line(line: &str) -> Option<MountInfo<'_>> {
    // The kernel escapes spaces in paths, so " - " only ever ends the optional fields.
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let _id = left.next()?;
    let _parent = left.next()?;
    let dev = parse_dev(left.next()?)?;
    let _root = left.next()?;
    let mount_point = left.next()?;
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let source = right.next()?;
    Some(MountInfo {
        dev,
        mount_point,
        fstype,
        source,
    })
}

/// `MAJ:MIN` in decimal, surrounding white space allowed (a sysfs `dev` file ends in `\n`).
pub(crate) fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once(':')?;
    let num = |n: &str| {
        (!n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse::<u32>().ok())
            .flatten()
    };
    Some((num(major)?, num(minor)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_lines() {
        let l = "36 35 254:16 / /run/hull/a\\040b rw,noatime shared:1 master:2 - ext4 /dev/vdb \
                 rw,errors=continue";
        assert_eq!(
            parse_line(l),
            Some(MountInfo {
                dev: (254, 16),
                mount_point: "/run/hull/a\\040b",
                fstype: "ext4",
                source: "/dev/vdb",
            })
        );
        let no_optional = "22 1 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=1k,mode=755";
        assert_eq!(parse_line(no_optional).map(|m| m.fstype), Some("devtmpfs"));
        for bad in [
            "",
            "36 35 254:16 / /mnt rw",
            "36 35 x:16 / /mnt rw - ext4 /dev/vdb rw",
            "36 35 254:16 - ext4 /dev/vdb rw",
            "36 35 254:16 / /mnt rw - ext4",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn device_numbers() {
        assert_eq!(parse_dev("254:0\n"), Some((254, 0)));
        assert_eq!(parse_dev("0:22"), Some((0, 22)));
        for bad in [
            "",
            ":",
            "254",
            "254:",
            ":1",
            "-1:0",
            "+1:0",
            "1:2:3",
            "4294967296:0",
            "a:b",
        ] {
            assert_eq!(parse_dev(bad), None, "{bad:?}");
        }
    }
}
