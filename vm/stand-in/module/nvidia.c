// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * The stand-in NVIDIA kernel module for provision's VM tests (vm/). Not a
 * driver: it has the interface the upgrade window meets on a real host, and
 * nothing else.
 *  - character devices /dev/nvidiactl and /dev/nvidia0 on major 195, as the
 *    real nvidia.ko (NV_MAJOR_DEVICE_NUMBER 195);
 *  - every open file holds a module reference (.owner), so `rmmod nvidia`
 *    answers "Module nvidia is in use" while a process holds a device, as
 *    the real one does;
 *  - /proc/driver/nvidia/version in the open module's format and
 *    /sys/module/nvidia/version (MODULE_VERSION);
 *  - a symbol nvidia_uvm and nvidia_modeset use, so they depend on it
 *    (/sys/module/nvidia/holders, "Used by" in /proc/modules).
 */
#ifdef NV_STAND_IN_FAIL
#error "stand-in: a build failure was asked for (/etc/nvidia-stand-in/fail-build), as a kernel API change breaks the real source"
#endif

#include <linux/device.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

#define NV_MAJOR 195
#define NV_CTL_MINOR 255

static struct class *nv_class;
static struct proc_dir_entry *nv_proc_dir;

static int nv_open(struct inode *inode, struct file *file) { return 0; }
static int nv_release(struct inode *inode, struct file *file) { return 0; }

static const struct file_operations nv_fops = {
	.owner = THIS_MODULE,
	.open = nv_open,
	.release = nv_release,
	.llseek = noop_llseek,
};

/* The format of open-gpu-kernel-modules' GENERATE_NVIDSTRING. */
static int nv_version_show(struct seq_file *m, void *v)
{
	seq_printf(m, "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  %s  "
		      "Release Build  (provision stand-in)\n"
		      "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
		   NV_VERSION);
	return 0;
}

/* Called by nvidia_uvm and nvidia_modeset: makes them depend on nvidia. */
const char *nvidia_stand_in_version(void) { return NV_VERSION; }
EXPORT_SYMBOL(nvidia_stand_in_version);

static char *nv_devnode(struct device *dev, umode_t *mode)
{
	if (mode)
		*mode = 0666;
	return NULL;
}

static int __init nv_init(void)
{
	int error = register_chrdev(NV_MAJOR, "nvidia", &nv_fops);
	if (error < 0)
		return error;
	nv_class = class_create(THIS_MODULE, "nvidia");
	if (IS_ERR(nv_class)) {
		unregister_chrdev(NV_MAJOR, "nvidia");
		return PTR_ERR(nv_class);
	}
	nv_class->devnode = nv_devnode;
	device_create(nv_class, NULL, MKDEV(NV_MAJOR, 0), NULL, "nvidia0");
	device_create(nv_class, NULL, MKDEV(NV_MAJOR, NV_CTL_MINOR), NULL, "nvidiactl");
	nv_proc_dir = proc_mkdir("driver/nvidia", NULL);
	if (nv_proc_dir)
		proc_create_single("version", 0444, nv_proc_dir, nv_version_show);
	pr_info("nvidia: stand-in module %s loaded\n", NV_VERSION);
	return 0;
}

static void __exit nv_exit(void)
{
	proc_remove(nv_proc_dir);
	device_destroy(nv_class, MKDEV(NV_MAJOR, NV_CTL_MINOR));
	device_destroy(nv_class, MKDEV(NV_MAJOR, 0));
	class_destroy(nv_class);
	unregister_chrdev(NV_MAJOR, "nvidia");
}

module_init(nv_init);
module_exit(nv_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION(NV_VERSION);
MODULE_DESCRIPTION("provision's stand-in for the NVIDIA kernel module (tests only)");
